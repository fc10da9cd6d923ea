%% @doc The one way the library reaches MongooseIM 6.3's instrumentation
%% (`mongoose_instrument'): events are declared with set_up/1 and executed
%% with execute/3 or span/4 only when MongooseIM's instrumentation server
%% runs; without it every function here does nothing but read one
%% persistent term, so requests pay nothing for it.
%%
%% Whether it runs is asked at start points (a pool or mod_global_distrib
%% starting, the metrics process starting: recheck/0), never per event.
-module(mongoose_native_instrument).

-export([recheck/0, enabled/0, set_up/1, tear_down/1, execute/3, span/4]).

-define(ENABLED, {?MODULE, enabled}).

-type spec() :: {atom(), map(), map()}.
-export_type([spec/0]).

%% @doc Asks again whether MongooseIM's instrumentation is there: its
%% module with `execute/3' loaded and its server registered.
-spec recheck() -> boolean().
recheck() ->
    On = case code:ensure_loaded(mongoose_instrument) of
             {module, _} ->
                 erlang:function_exported(mongoose_instrument, execute, 3)
                     andalso is_pid(whereis(mongoose_instrument));
             _ ->
                 false
         end,
    %% Putting the value it already has costs nothing.
    persistent_term:put(?ENABLED, On),
    On.

-spec enabled() -> boolean().
enabled() ->
    persistent_term:get(?ENABLED, false).

%% @doc Declares events; `true' when MongooseIM took them (MongooseIM fails on one declared twice, or on
%% label keys unlike those declared before for the same event: logged).
-spec set_up([spec()]) -> boolean().
set_up(Specs) ->
    recheck() andalso safely(set_up, fun() -> mongoose_instrument:set_up(Specs) end).

-spec tear_down([spec()]) -> boolean().
tear_down(Specs) ->
    enabled() andalso safely(tear_down, fun() -> mongoose_instrument:tear_down(Specs) end).

%% @doc An event with its measurements. A failure (an event MongooseIM
%% does not know, say after its server restarted) is logged, at most once
%% a second, and never reaches the caller.
-spec execute(atom(), map(), map()) -> boolean().
execute(Event, Labels, Measurements) ->
    enabled() andalso
        safely(Event, fun() -> mongoose_instrument:execute(Event, Labels, Measurements) end).

%% @doc Runs `F', and with MongooseIM's instrumentation measures it as
%% `mongoose_instrument:span/4' does (`MeasureF(Microseconds, Result)').
-spec span(atom(), map(), fun(() -> R), fun((integer(), R) -> map())) -> R.
span(Event, Labels, F, MeasureF) ->
    case enabled() of
        false ->
            F();
        true ->
            {Time, Result} = timer:tc(F),
            execute(Event, Labels, MeasureF(Time, Result)),
            Result
    end.

%% `true' when done, `false' when it failed (logged).
safely(What, F) ->
    try
        _ = F(),
        true
    catch Class:Reason ->
            mongoose_native_log:log(warning, #{what => instrument_failed, event => What,
                                               class => Class, reason => Reason}),
            false
    end.
