%% @doc Where the library's figures reach operators, once a second:
%%
%% - With MongooseIM's instrumentation running (mongoose_native_instrument),
%%   the events whose figures the NIF counts are executed with what changed
%%   since the last second: mod_global_distrib's connection counters and
%%   outgoing messages per remote host, each outgoing queue time, the
%%   session table's cache misses, and the rabbit pools' connections and
%%   publishes. Events the Erlang side sees itself are executed where they
%%   happen.
%% - With `metrics_listen' set (the `mongoose_native' application's
%%   environment, e.g. "127.0.0.1:9105"; off by default) the NIF serves
%%   Prometheus scrapes on that address from the runtime: the pools'
%%   figures read at scrape time, and mod_global_distrib's, which this
%%   process renders from `mod_global_distrib:metrics()' each second.
-module(mongoose_native_metrics).
-behaviour(gen_server).

-export([start_link/0, listening/0, tick/0, render_gd/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(INTERVAL, 1000).
-define(START_TIMEOUT, 10000).
-define(GD_SECTION, <<"mod_global_distrib">>).

%% Seed 004's counters the NIF keeps per remote host, their events, and
%% whether some are counted before the host is known (an incoming
%% connection closed before its peer's `gd_start').
-define(HOST_COUNTERS,
        [{mod_global_distrib_outgoing_messages_count, mod_global_distrib_outgoing_messages, false},
         {mod_global_distrib_outgoing_established_count, mod_global_distrib_outgoing_established,
          false},
         {mod_global_distrib_outgoing_closed_count, mod_global_distrib_outgoing_closed, false},
         {mod_global_distrib_outgoing_errored_count, mod_global_distrib_outgoing_errored, false},
         {mod_global_distrib_incoming_first_packet_count, mod_global_distrib_incoming_first_packet,
          false},
         {mod_global_distrib_incoming_closed_count, mod_global_distrib_incoming_closed, true},
         {mod_global_distrib_incoming_errored_count, mod_global_distrib_incoming_errored, true}]).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc The endpoint's address, or `none' when `metrics_listen' is unset.
-spec listening() -> {ok, binary()} | none.
listening() ->
    gen_server:call(?MODULE, listening).

%% @doc Does the second's work now (tests, and before a scrape that must
%% see the last second).
-spec tick() -> ok.
tick() ->
    gen_server:call(?MODULE, tick, 30000).

init([]) ->
    %% terminate/2 stops the endpoint when the application stops.
    process_flag(trap_exit, true),
    mongoose_native_instrument:recheck(),
    case listen(application:get_env(mongoose_native, metrics_listen)) of
        {ok, Listening} ->
            erlang:send_after(?INTERVAL, self(), tick),
            {ok, #{listening => Listening, seen => #{}}};
        {error, Reason} ->
            {stop, Reason}
    end.

listen(undefined) ->
    {ok, none};
listen({ok, Addr}) ->
    case (is_list(Addr) orelse is_binary(Addr)) andalso unicode:characters_to_binary(Addr) of
        Bin when is_binary(Bin) ->
            Listen = fun(Pid, Tag) -> mongoose_native_nif:metrics_listen(Bin, Pid, Tag) end,
            case mongoose_native_nif:start(Listen, ?START_TIMEOUT) of
                {ok, Bound} -> {ok, Bound};
                {error, _} = Error -> Error
            end;
        _ ->
            Msg = io_lib:format("metrics_listen: expected a string such as \"127.0.0.1:9105\", "
                                "got ~0p", [Addr]),
            {error, {invalid_config, iolist_to_binary(Msg)}}
    end.

handle_call(listening, _From, State = #{listening := none}) ->
    {reply, none, State};
handle_call(listening, _From, State = #{listening := Addr}) ->
    {reply, {ok, Addr}, State};
handle_call(tick, _From, State) ->
    {reply, ok, do_tick(State)};
handle_call(_, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_, State) ->
    {noreply, State}.

handle_info(tick, State) ->
    erlang:send_after(?INTERVAL, self(), tick),
    {noreply, do_tick(State)};
handle_info(_, State) ->
    {noreply, State}.

terminate(_Reason, #{listening := Listening}) ->
    Listening =:= none orelse mongoose_native_nif:metrics_stop(),
    mongoose_native_nif:metrics_section(?GD_SECTION, <<>>),
    ok.

do_tick(State = #{listening := Listening, seen := Seen}) ->
    Instrumented = mongoose_native_instrument:enabled(),
    Transport = case mod_global_distrib_utils:started() of
                    true -> persistent_term:get({mod_global_distrib, transport}, undefined);
                    false -> undefined
                end,
    Seen1 = case Instrumented of
                true -> rabbit_events(Seen, gd_events(Transport, Seen, #{}));
                false -> Seen
            end,
    Transport =:= undefined orelse queue_time_events(Transport, Instrumented),
    Listening =:= none orelse
        mongoose_native_nif:metrics_section(?GD_SECTION, render_gd(Transport =/= undefined)),
    State#{seen := Seen1}.

%%--------------------------------------------------------------------
%% MongooseIM's events for figures the NIF counts
%%--------------------------------------------------------------------

%% Each tick builds the values seen (`New') from what runs now, reading the
%% last ones from `Old'; figures of a restarted transport or pool start
%% again from zero under a new resource, so they are new keys.
gd_events(undefined, _Old, New) ->
    New;
gd_events(Transport = #{res := Res}, Old, New) ->
    Metrics = mongoose_native_gd_transport:metrics(Transport),
    PerHost = maps:get(per_host, Metrics, #{}),
    New1 = lists:foldl(
             fun({Counter, Event, Unnamed}, Acc) ->
                     host_counter_events(Res, Counter, Event, Unnamed, Metrics, PerHost, Old, Acc)
             end, New, ?HOST_COUNTERS),
    New2 = delta_event({Res, mod_global_distrib_incoming_established},
                       mod_global_distrib_incoming_established, #{}, count,
                       maps:get(mod_global_distrib_incoming_established_count, Metrics, 0),
                       #{}, Old, New1),
    case mod_global_distrib_mapping:metrics() of
        {ok, #{mod_global_distrib_mapping_cache_misses_count := Misses}} ->
            delta_event({Res, mod_global_distrib_mapping_cache_misses},
                        mod_global_distrib_mapping_cache_misses, #{}, count, Misses, #{},
                        Old, New2);
        _ ->
            New2
    end.

%% Per remote host, and what no host could be named for (connections
%% closed before their peer said who it is) without one.
host_counter_events(Res, Counter, Event, Unnamed, Metrics, PerHost, Old, New) ->
    {New1, HostsTotal} =
        maps:fold(fun(Host, HostMetrics, {Acc, Sum}) ->
                          N = maps:get(Counter, HostMetrics, 0),
                          {delta_event({Res, Event, Host}, Event, #{}, count, N, #{host => Host},
                                       Old, Acc),
                           Sum + N}
                  end, {New, 0}, PerHost),
    case Unnamed of
        true ->
            Count = max(0, maps:get(Counter, Metrics, 0) - HostsTotal),
            delta_event({Res, Event}, Event, #{}, count, Count, #{}, Old, New1);
        false ->
            New1
    end.

%% Executes `Event' with `Key => Delta' (plus `Extra') when the figure
%% named `Id' grew since last time.
delta_event(Id, Event, Labels, Key, Value, Extra, Old, New) ->
    Last = maps:get(Id, Old, 0),
    Value > Last andalso
        mongoose_native_instrument:execute(Event, Labels, Extra#{Key => Value - Last}),
    New#{Id => max(Value, Last)}.

%% Each stanza's queue time, as MongooseIM executes it per stanza; the
%% NIF keeps them only while they are asked for.
queue_time_events(Transport, Instrumented) ->
    [mongoose_native_instrument:execute(mod_global_distrib_outgoing_queue, #{},
                                        #{time => Us, host => Host})
     || {Host, Times} <- mongoose_native_gd_transport:queue_times(Transport, Instrumented),
        Us <- Times],
    ok.

%% MongooseIM's rabbit worker executes an event per connection opened or
%% closed and per publish; the lanes count them.
rabbit_events(Old, New) ->
    lists:foldl(fun(Pool, Acc) -> rabbit_pool_events(Pool, Old, Acc) end, New,
                [{HT, Tag} || {rabbit, HT, Tag} <- mongoose_wpool:get_pools()]).

rabbit_pool_events({HostType, Tag}, Old, New) ->
    case {mongoose_wpool:get_pool_handle(rabbit, HostType, Tag),
          mongoose_wpool:stats(rabbit, HostType, Tag)} of
        {{ok, #{res := Res}}, Stats} when is_list(Stats) ->
            Labels = #{host_type => HostType, pool_tag => Tag},
            R = proplists:get_value(rabbit, Stats, []),
            Get = fun(K) -> proplists:get_value(K, R, 0) end,
            Size = proplists:get_value(size, Stats, 0),
            Connected = length([W || {_, W} <- proplists:get_value(workers, Stats, []),
                                     proplists:get_value(connected, W) =:= true]),
            Opened = Size + Get(reconnects),
            Published = #{count => Get(published), failed => Get(nacked) + Get(failed),
                          timeout => Get(confirm_timeouts)},
            New1 = deltas(Res, wpool_rabbit_messages_published, Labels, Published, Old, New),
            New2 = deltas(Res, wpool_rabbit_connections, Labels,
                          #{opened => Opened, closed => Opened - Connected}, Old, New1),
            active_event(Res, Labels, Connected, Old, New2);
        _ ->
            New
    end.

%% One event with every measurement that grew.
deltas(Res, Event, Labels, Values, Old, New) ->
    {Measurements, New1} =
        maps:fold(fun(Key, Value, {M, Acc}) ->
                          Id = {Res, Event, Key},
                          Last = maps:get(Id, Old, 0),
                          M1 = case Value > Last of
                                   true -> M#{Key => Value - Last};
                                   false -> M
                               end,
                          {M1, Acc#{Id => max(Value, Last)}}
                  end, {#{}, New}, Values),
    map_size(Measurements) > 0 andalso
        mongoose_native_instrument:execute(Event, Labels, Measurements),
    New1.

%% `active' is a counter (MongooseIM adds 1 and -1): its change.
active_event(Res, Labels, Connected, Old, New) ->
    Id = {Res, wpool_rabbit_connections, active},
    Change = Connected - maps:get(Id, Old, 0),
    Change =/= 0 andalso
        mongoose_native_instrument:execute(wpool_rabbit_connections, Labels,
                                           #{active => Change}),
    New#{Id => Connected}.

%%--------------------------------------------------------------------
%% mod_global_distrib in the Prometheus text format
%%--------------------------------------------------------------------

%% @doc Seed 004's metrics (`mod_global_distrib:metrics()') as Prometheus
%% families: counters as `..._total', times in seconds and the TTL values as
%% summaries, per remote host (label `remote_host') where seed 004 has it.
-spec render_gd(boolean()) -> binary().
render_gd(false) ->
    <<>>;
render_gd(true) ->
    M = mod_global_distrib:metrics(),
    PerHost = maps:get(per_host, M, #{}),
    Hosts = lists:sort(maps:to_list(PerHost)),
    HostCounters = [{mod_global_distrib_incoming_messages_count, false}
                    | [{C, Unnamed} || {C, _, Unnamed} <- ?HOST_COUNTERS]],
    Counters =
        [counter_family(C, <<"Seed 004's ", (atom_to_binary(C))/binary, ", per remote host.">>,
                        M, Hosts, Unnamed)
         || {C, Unnamed} <- HostCounters] ++
        [counter_family(C, Help, M, [], true)
         || {C, Help} <- [{mod_global_distrib_incoming_established_count,
                           <<"Incoming connections established (their origin is not known yet).">>},
                          {mod_global_distrib_mapping_fetches_count,
                           <<"Session table fetches, cached or not.">>},
                          {mod_global_distrib_mapping_cache_misses_count,
                           <<"Session table fetches that went to Redis.">>},
                          {mod_global_distrib_stop_ttl_zero_count,
                           <<"Stanzas not rerouted because their TTL was 0.">>}]],
    Summaries =
        [summary_family(H, Unit, Help, M, HostsOrNone)
         || {H, Unit, Help, HostsOrNone} <-
                [{mod_global_distrib_incoming_transfer_time, seconds,
                  <<"From the sender's clock to arrival (wall clocks of two machines).">>, Hosts},
                 {mod_global_distrib_outgoing_queue_time, seconds,
                  <<"Time a stanza waited in its connection's queue.">>, Hosts},
                 {mod_global_distrib_incoming_queue_time, seconds,
                  <<"Time a stanza waited for its routing worker.">>, []},
                 {mod_global_distrib_mapping_fetches_time, seconds,
                  <<"Time a session table fetch took.">>, []},
                 {mod_global_distrib_delivered_with_ttl_value, none,
                  <<"TTL of stanzas routed to this datacenter.">>, []}]],
    Bounce = family(<<"mod_global_distrib_bounce_queue_size">>,
                    <<"Stanzas waiting in this node's bounce store.">>, gauge,
                    [series(<<"mod_global_distrib_bounce_queue_size">>, [],
                            maps:get(mod_global_distrib_bounce_queue_size, M, 0))]),
    iolist_to_binary([Counters, Summaries, Bounce]).

%% `..._count' becomes `..._total'.
counter_name(Counter) ->
    Name = atom_to_binary(Counter),
    <<(binary:part(Name, 0, byte_size(Name) - byte_size(<<"_count">>)))/binary, "_total">>.

%% Per host, and without one what no host was known for (where that
%% happens: `Unnamed'), or all of it before any host.
counter_family(Counter, Help, M, [], _) ->
    Name = counter_name(Counter),
    family(Name, Help, counter, [series(Name, [], maps:get(Counter, M, 0))]);
counter_family(Counter, Help, M, Hosts, Unnamed) ->
    Name = counter_name(Counter),
    PerHost = [{Host, maps:get(Counter, HM, 0)} || {Host, HM} <- Hosts],
    Rest = maps:get(Counter, M, 0) - lists:sum([N || {_, N} <- PerHost]),
    Series = [series(Name, [{remote_host, Host}], N) || {Host, N} <- PerHost] ++
        [series(Name, [], Rest) || Unnamed, Rest > 0],
    family(Name, Help, counter, Series).

summary_family(Histogram, Unit, Help, M, Hosts) ->
    Name = case Unit of
               seconds -> <<(atom_to_binary(Histogram))/binary, "_seconds">>;
               none -> atom_to_binary(Histogram)
           end,
    Scale = case Unit of
                seconds -> fun(Us) -> Us / 1.0e6 end;
                none -> fun(V) -> V end
            end,
    Sources = case Hosts of
                  [] -> [{[], maps:get(Histogram, M, #{})}];
                  _ -> [{[{remote_host, Host}], maps:get(Histogram, HM, #{})}
                        || {Host, HM} <- Hosts]
              end,
    Series = lists:append([summary_series(Name, Labels, H, Scale) || {Labels, H} <- Sources]),
    family(Name, Help, summary, Series).

summary_series(Name, Labels, H, Scale) ->
    Quantiles = [{<<"0.5">>, median}, {<<"0.75">>, 75}, {<<"0.9">>, 90}, {<<"0.95">>, 95},
                 {<<"0.99">>, 99}, {<<"0.999">>, 999}],
    [series(Name, Labels ++ [{quantile, Q}], Scale(maps:get(K, H, 0))) || {Q, K} <- Quantiles]
        ++ [series(<<Name/binary, "_sum">>, Labels, Scale(maps:get(sum, H, 0))),
            series(<<Name/binary, "_count">>, Labels, maps:get(count, H, 0))].

family(Name, Help, Type, Series) ->
    [<<"# HELP ">>, Name, $\s, Help, $\n, <<"# TYPE ">>, Name, $\s, atom_to_binary(Type), $\n
     | Series].

series(Name, [], Value) ->
    [Name, $\s, number(Value), $\n];
series(Name, Labels, Value) ->
    Pairs = lists:join($,, [[atom_to_binary(K), $=, $", escape(V), $"] || {K, V} <- Labels]),
    [Name, ${, Pairs, $}, $\s, number(Value), $\n].

number(V) when is_integer(V) -> integer_to_binary(V);
number(V) when is_float(V) -> float_to_binary(V, [short]).

escape(V) ->
    binary:replace(binary:replace(binary:replace(V, <<"\\">>, <<"\\\\">>, [global]),
                                  <<"\"">>, <<"\\\"">>, [global]),
                   <<"\n">>, <<"\\n">>, [global]).
