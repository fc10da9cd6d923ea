%% A recording stand-in for MongooseIM 6.3's `mongoose_instrument' (which
%% cannot be built here), for metrics_SUITE: it keeps the events declared
%% through it and checks every call against them as MongooseIM does and
%% more strictly. set_up/1,3 refuses an event declared twice, label keys
%% unlike the event's earlier ones, and a config that is not
%% `#{metrics := #{Name => gauge | counter | spiral | histogram}}' (with an
%% optional probe module exporting probe/2); execute/3 refuses an event not
%% declared, measurements without any of its metrics, and values of the
%% wrong type (every metric an integer, a spiral's not negative). A refused
%% call raises in the caller, as MongooseIM's does, and is kept in
%% violations/0, since library code logs what its events raise.
%%
%% It runs only where a suite starts it (a datacenter's peer node), so the
%% library sees no instrumentation anywhere else.
-module(mongoose_instrument).

-export([start/0, stop/0, set_up/1, set_up/3, tear_down/1, tear_down/2, execute/3, span/4,
         span/5]).
-export([specs/0, events/1, events/2, violations/0, run_probes/0, clear/0]).

-define(SPECS, mongoose_instrument_specs).
-define(EVENTS, mongoose_instrument_events).
-define(VIOLATIONS, mongoose_instrument_violations).
-define(TYPES, [gauge, counter, spiral, histogram]).

%% @doc Registers the process MongooseIM's instrumentation runs as, owning
%% the tables.
start() ->
    Parent = self(),
    Pid = spawn(fun() ->
                        register(?MODULE, self()),
                        ets:new(?SPECS, [named_table, public, set]),
                        ets:new(?EVENTS, [named_table, public, duplicate_bag,
                                          {write_concurrency, true}]),
                        ets:new(?VIOLATIONS, [named_table, public, bag]),
                        Parent ! {self(), started},
                        receive stop -> ok end
                end),
    receive {Pid, started} -> ok end.

stop() ->
    case whereis(?MODULE) of
        undefined -> ok;
        Pid ->
            Ref = monitor(process, Pid),
            Pid ! stop,
            receive {'DOWN', Ref, _, _, _} -> ok end
    end.

set_up(Specs) ->
    lists:foreach(fun({Event, Labels, Config}) -> set_up(Event, Labels, Config) end, Specs).

set_up(Event, Labels, Config) ->
    check(is_atom(Event) andalso is_map(Labels), {bad_event, Event, Labels}),
    check(maps:fold(fun(K, V, Ok) -> Ok andalso is_atom(K) andalso
                                         (is_atom(V) orelse is_binary(V)) end, true, Labels),
          {bad_labels, Event, Labels}),
    check_config(Event, Config),
    check(ets:lookup(?SPECS, {Event, Labels}) =:= [],
          {event_already_registered, Event, Labels}),
    Keys = lists:sort(maps:keys(Labels)),
    [check(lists:sort(maps:keys(Other)) =:= Keys, {inconsistent_labels, Event, Labels, Other})
     || [Other] <- ets:match(?SPECS, {{Event, '$1'}, '_'})],
    true = ets:insert(?SPECS, {{Event, Labels}, Config}),
    ok.

check_config(Event, Config = #{metrics := Metrics}) when is_map(Metrics), map_size(Metrics) > 0 ->
    check(lists:all(fun({K, T}) -> is_atom(K) andalso lists:member(T, ?TYPES) end,
                    maps:to_list(Metrics)), {bad_metrics, Event, Metrics}),
    check(maps:keys(maps:without([metrics, probe, loglevel], Config)) =:= [],
          {bad_config, Event, Config}),
    case Config of
        #{probe := #{module := M}} ->
            check(code:ensure_loaded(M) =:= {module, M} andalso
                      erlang:function_exported(M, probe, 2), {bad_probe, Event, Config});
        #{probe := Probe} ->
            check(false, {bad_probe, Event, Probe});
        #{} ->
            ok
    end;
check_config(Event, Config) ->
    check(false, {bad_config, Event, Config}).

tear_down(Specs) ->
    lists:foreach(fun({Event, Labels, _}) -> tear_down(Event, Labels) end, Specs).

tear_down(Event, Labels) ->
    ets:delete(?SPECS, {Event, Labels}),
    ok.

execute(Event, Labels, Measurements) ->
    case ets:lookup(?SPECS, {Event, Labels}) of
        [{_, #{metrics := Metrics}}] ->
            check(is_map(Measurements), {bad_measurements, Event, Measurements}),
            Present = maps:with(maps:keys(Metrics), Measurements),
            check(map_size(Present) > 0, {no_metric_measured, Event, Labels, Measurements}),
            [check(valid(maps:get(K, Metrics), V), {bad_value, Event, K, maps:get(K, Metrics), V})
             || {K, V} <- maps:to_list(Present)],
            true = ets:insert(?EVENTS, {{Event, Labels}, Measurements}),
            ok;
        [] ->
            check(false, {event_not_registered, Event, Labels})
    end.

valid(spiral, V) -> is_integer(V) andalso V >= 0;
valid(_, V) -> is_integer(V).

span(Event, Labels, F, MeasureF) ->
    span(Event, Labels, F, [], MeasureF).

span(Event, Labels, F, Args, MeasureF) ->
    check(ets:lookup(?SPECS, {Event, Labels}) =/= [], {event_not_registered, Event, Labels}),
    {Time, Result} = timer:tc(F, Args),
    execute(Event, Labels, MeasureF(Time, Result)),
    Result.

%% A refused call: kept, and raised in the caller.
check(true, _) ->
    ok;
check(false, What) ->
    ets:insert(?VIOLATIONS, {What}),
    error(What).

%% @doc `[{Event, Labels, Config}]' as declared.
specs() ->
    lists:sort([{E, L, C} || {{E, L}, C} <- ets:tab2list(?SPECS)]).

%% @doc The measurements executed for an event, with any labels.
events(Event) ->
    [M || [M] <- ets:match(?EVENTS, {{Event, '_'}, '$1'})].

events(Event, Labels) ->
    [M || {_, M} <- ets:lookup(?EVENTS, {Event, Labels})].

violations() ->
    [V || {V} <- ets:tab2list(?VIOLATIONS)].

%% @doc What MongooseIM's probe timers do: each declared probe's
%% measurements executed.
run_probes() ->
    [execute(E, L, M:probe(E, L)) || {E, L, #{probe := #{module := M}}} <- specs()],
    ok.

clear() ->
    ets:delete_all_objects(?EVENTS),
    ok.
