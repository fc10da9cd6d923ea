%% Issue 22: the library's figures where operators look.
%%
%% Two datacenters, dc1 and dc2, each a `peer' node running the library and
%% mod_global_distrib (gd_test_dc) on the Redis of 6379 (database 13,
%% flushed first). dc1 runs the recording stand-in for MongooseIM's
%% `mongoose_instrument' (test/mongoose_instrument.erl), started before
%% the library, so the library declares and executes MongooseIM 6.3's
%% events there; dc1 also serves the Prometheus endpoint (`metrics_listen'
%% "127.0.0.1:0"), which this node scrapes and checks with
%% `promtool check metrics'. dc2 has neither.
-module(metrics_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-import(gd_SUITE, [free_ports/1, rpc/5, wait_until/2]).

-define(DB, 13).
-define(GLOBAL, <<"example.test">>).
-define(PRIVATE_PORT, 16391).
-define(CANARY, <<"canary-Secret-4711">>).

all() ->
    [{group, instrumentation}, {group, prometheus}, metrics_listen_off_by_default_and_checked].

groups() ->
    [{instrumentation, [sequence],
      [events_declared_as_mongooseim_declares_them, every_seed_004_metric_is_executed,
       pool_events, events_torn_down_and_declared_again]},
     {prometheus, [sequence],
      [scrapes_under_load_pass_promtool, pool_counters_move, gd_peers_in_the_scrape,
       no_secret_in_the_scrape]}].

suite() ->
    [{timetrap, {minutes, 4}}].

%% The datacenters start as gd_SUITE starts them (its helpers).
init_per_suite(Config0) ->
    Config = gd_SUITE:init_per_suite(Config0),
    "/usr/bin/promtool" ++ _ = os:find_executable("promtool"),
    Cli = "redis-cli -n " ++ integer_to_list(?DB),
    persistent_term:put({gd_SUITE, redis}, {Cli, #{database => ?DB}}),
    "OK" ++ _ = os:cmd(Cli ++ " FLUSHDB"),
    [P1, P2] = free_ports(2),
    Dcs = #{dc1 => start_dc(dc1, P1, [{metrics_listen, "127.0.0.1:0"}], true),
            dc2 => start_dc(dc2, P2, [], false)},
    [{dcs, Dcs} | Config].

end_per_suite(Config) ->
    [catch peer:stop(Peer) || #{peer := Peer} <- maps:values(?config(dcs, Config))],
    mn_test_redis:stop(?PRIVATE_PORT),
    ok.

init_per_group(_, Config) ->
    Config.

end_per_group(_, _Config) ->
    ok.

%%--------------------------------------------------------------------
%% Datacenters
%%--------------------------------------------------------------------

%% gd_SUITE's, with two connections per endpoint (the scrape counts them),
%% and a longer mapping life and fewer bounce retries.
dc_opts(Dc, Port) ->
    Opts = gd_SUITE:dc_opts(Dc, Port),
    Conns = maps:remove(disabled_gc_interval, maps:get(connections, Opts)),
    Opts#{connections := Conns#{connections_per_endpoint := 2},
          redis := #{expire_after => 5, refresh_after => 1},
          bounce := #{resend_after_ms => 100, max_retries => 2}}.

%% Instrumented: the stand-in runs before the library starts.
start_dc(Dc, Port, Env, Instrumented) ->
    Prepare = fun(Node) ->
                      [ok = erpc:call(Node, application, set_env, [mongoose_native, K, V])
                       || {K, V} <- Env],
                      Instrumented andalso (ok = erpc:call(Node, mongoose_instrument, start, [])),
                      ok
              end,
    {Dc, M} = gd_SUITE:start_dc(Dc, Port, dc_opts(Dc, Port), Prepare),
    M.

connect(Dc, User, Config) ->
    Self = self(),
    Proxy = spawn_link(fun() -> proxy(Self, Dc) end),
    ok = rpc(Dc, gd_test_dc, connect, [User, <<"r">>, Proxy], Config).

proxy(Parent, Tag) ->
    receive
        {route, _From, _To, _Acc, Packet} ->
            Parent ! {stanza, Tag, gd_test_dc:body(Packet)},
            proxy(Parent, Tag)
    end.

send(Dc, FromUser, ToUser, Body, Config) ->
    ok = rpc(Dc, gd_test_dc, send, [{FromUser, <<"r">>}, ToUser, Body], Config).

recv(Tag, Body) ->
    receive {stanza, Tag, Body} -> ok
    after 10000 -> ct:fail({not_received, Tag, Body})
    end.

wait_mapped(Dc, User, Host, Config) ->
    wait_until(fun() ->
                       rpc(Dc, mod_global_distrib_mapping, for_jid,
                           [{User, ?GLOBAL, <<>>}], Config) =:= {ok, Host}
               end, 10000).

%% Every instrumented call dc1 made was as declared.
no_violations(Config) ->
    ?assertEqual([], rpc(dc1, mongoose_instrument, violations, [], Config)).

%%--------------------------------------------------------------------
%% MongooseIM's instrumentation
%%--------------------------------------------------------------------

%% MongooseIM 6.3's declarations (src/global_distrib/*.erl,
%% src/wpool/mongoose_wpool_rdbms.erl, src/mongoose_rabbit_worker.erl),
%% written out here from those sources.
gd_specs_6_3() ->
    Count = #{metrics => #{count => spiral}},
    Time = #{metrics => #{time => histogram}},
    [{mod_global_distrib_delivered_with_ttl, #{}, #{metrics => #{value => histogram}}},
     {mod_global_distrib_stop_ttl_zero, #{}, Count},
     {mod_global_distrib_mapping_fetches, #{}, #{metrics => #{count => spiral, time => histogram}}},
     {mod_global_distrib_mapping_cache_misses, #{}, Count},
     {mod_global_distrib_incoming_queue, #{}, Time},
     {mod_global_distrib_incoming_established, #{}, Count},
     {mod_global_distrib_incoming_errored, #{}, Count},
     {mod_global_distrib_incoming_closed, #{}, Count},
     {mod_global_distrib_incoming_transfer, #{}, Time},
     {mod_global_distrib_incoming_messages, #{}, Count},
     {mod_global_distrib_incoming_first_packet, #{}, Count},
     {mod_global_distrib_outgoing_messages, #{}, Count},
     {mod_global_distrib_outgoing_queue, #{}, Time},
     {mod_global_distrib_outgoing_established, #{}, Count},
     {mod_global_distrib_outgoing_errored, #{}, Count},
     {mod_global_distrib_outgoing_closed, #{}, Count},
     {mod_global_distrib_bounce_queue, #{}, #{probe => #{module => mod_global_distrib_bounce},
                                               metrics => #{size => gauge}}}].

rdbms_stats_metrics() ->
    #{workers => counter, recv_oct => spiral, recv_cnt => spiral, recv_max => gauge,
      send_oct => spiral, send_max => gauge, send_cnt => spiral, send_pend => spiral}.

pool_specs_6_3() ->
    Probe = #{probe => #{module => mongoose_wpool_rdbms}, metrics => rdbms_stats_metrics()},
    Rabbit = #{host_type => global, pool_tag => metrics},
    [{wpool_global_rdbms_stats, #{pool_tag => default}, Probe},
     {wpool_rdbms_stats, #{host_type => ?GLOBAL, pool_tag => default}, Probe},
     {wpool_rabbit_connections, Rabbit,
      #{metrics => #{active => counter, opened => spiral, closed => spiral, failed => spiral}}},
     {wpool_rabbit_messages_published, Rabbit,
      #{metrics => #{count => spiral, failed => spiral, timeout => spiral, time => histogram,
                     size => histogram}}}].

rdbms_conn() ->
    #{driver => pgsql, host => "127.0.0.1", database => "test", username => "postgres",
      password => ?CANARY}.

events_declared_as_mongooseim_declares_them(Config) ->
    ?assertEqual(lists:sort(gd_specs_6_3()), rpc(dc1, mongoose_instrument, specs, [], Config)),
    {ok, _} = rpc(dc1, mongoose_wpool, start, [rdbms, global, default, [{workers, 2}], rdbms_conn()],
                  Config),
    {ok, _} = rpc(dc1, mongoose_wpool, start, [rdbms, ?GLOBAL, default, [{workers, 3}], rdbms_conn()],
                  Config),
    {ok, _} = rpc(dc1, mongoose_wpool, start, [rabbit, global, metrics, [{workers, 2}],
                                               #{host => "127.0.0.1"}], Config),
    %% A redis pool has no events in MongooseIM 6.3.
    {ok, _} = rpc(dc1, mongoose_wpool, start, [redis, global, plain, [{workers, 1}],
                                               #{database => ?DB}], Config),
    ?assertEqual(lists:sort(gd_specs_6_3() ++ pool_specs_6_3()),
                 rpc(dc1, mongoose_instrument, specs, [], Config)),
    no_violations(Config).

%% Each event of seed 004's table executed as MongooseIM 6.3 executes it:
%% its metric keys, and the remote host where MongooseIM names one.
every_seed_004_metric_is_executed(Config) ->
    rpc(dc1, mongoose_instrument, clear, [], Config),
    connect(dc1, <<"bob">>, Config),
    connect(dc2, <<"alice">>, Config),
    wait_mapped(dc1, <<"alice">>, <<"dc2.test">>, Config),
    wait_mapped(dc2, <<"bob">>, <<"dc1.test">>, Config),
    send(dc1, <<"bob">>, <<"alice">>, <<"b->a">>, Config),
    recv(dc2, <<"b->a">>),
    send(dc2, <<"alice">>, <<"bob">>, <<"a->b">>, Config),
    recv(dc1, <<"a->b">>),
    %% TTL 0: routed here, counted.
    {ok, _} = rpc(dc1, erlang, apply, [fun ttl_zero/0, []], Config),
    %% A stanza for nobody known: bounced (stop_ttl_zero once it gives up).
    send(dc1, <<"bob">>, <<"nobody">>, <<"lost">>, Config),
    #{res := _} = T = rpc(dc1, mod_global_distrib, transport, [], Config),
    Port = maps:get(port, maps:get(dc1, ?config(dcs, Config))),
    %% Incoming: garbage (errored, no host known), and a peer that says who
    %% it is and leaves (first packet, closed).
    {ok, Bad} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary]),
    ok = gen_tcp:send(Bad, <<0, 0, 0, 5, "<bad/">>),
    {ok, Good} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary]),
    Start = <<"<gd_start server='dc7.test' conn_id='c7'/>">>,
    ok = gen_tcp:send(Good, <<(byte_size(Start)):32, Start/binary>>),
    timer:sleep(200),
    ok = gen_tcp:close(Good),
    %% Outgoing: a datacenter that cannot be reached (errored), and one
    %% whose only endpoint goes away (closed).
    [Closed] = free_ports(1),
    ok = rpc(dc1, mongoose_native_gd_transport, set_endpoints,
             [T, <<"dc9.test">>, [{"127.0.0.1", Closed}]], Config),
    _ = rpc(dc1, mongoose_native_gd_transport, send, [T, <<"dc9.test">>, <<"k">>, x], Config),
    {ok, L} = gen_tcp:listen(0, [binary, {ip, {127, 0, 0, 1}}, {active, true}]),
    {ok, LPort} = inet:port(L),
    Acceptor = spawn_link(fun() -> {ok, S} = gen_tcp:accept(L), receive stop -> gen_tcp:close(S) end end),
    ok = rpc(dc1, mongoose_native_gd_transport, set_endpoints,
             [T, <<"dc8.test">>, [{"127.0.0.1", LPort}]], Config),
    ok = rpc(dc1, mongoose_native_gd_transport, send, [T, <<"dc8.test">>, <<"k">>, x], Config),
    timer:sleep(300),
    ok = rpc(dc1, mongoose_native_gd_transport, set_endpoints, [T, <<"dc8.test">>, [], []], Config),
    Executed = fun(E) -> rpc(dc1, mongoose_instrument, events, [E], Config) end,
    wait_until(fun() ->
                       ok = rpc(dc1, mongoose_native_metrics, tick, [], Config),
                       [E || {E, _, _} <- gd_specs_6_3(), E =/= mod_global_distrib_bounce_queue,
                             Executed(E) =:= []] =:= []
               end, 10000),
    ok = rpc(dc1, mongoose_instrument, run_probes, [], Config),
    gen_tcp:close(Bad),
    Acceptor ! stop,
    %% Each with its metric, and the host as MongooseIM 6.3 gives it.
    Dc2 = <<"dc2.test">>,
    Has = fun(E, Pattern) -> lists:any(Pattern, Executed(E)) end,
    ?assert(Has(mod_global_distrib_outgoing_messages,
                fun(#{count := N, host := H}) -> N >= 1 andalso H =:= Dc2; (_) -> false end)),
    ?assert(Has(mod_global_distrib_outgoing_queue,
                fun(#{time := Us, host := H}) -> Us >= 0 andalso H =:= Dc2; (_) -> false end)),
    ?assert(Has(mod_global_distrib_outgoing_established, fun(#{host := H}) -> H =:= Dc2 end)),
    ?assert(Has(mod_global_distrib_outgoing_errored, fun(#{host := H}) -> H =:= <<"dc9.test">> end)),
    ?assert(Has(mod_global_distrib_outgoing_closed, fun(#{host := H}) -> H =:= <<"dc8.test">> end)),
    ?assert(Has(mod_global_distrib_incoming_established, fun(#{count := N}) -> N >= 3 end)),
    ?assert(Has(mod_global_distrib_incoming_first_packet,
                fun(#{host := H}) -> H =:= <<"dc7.test">> end)),
    ?assert(Has(mod_global_distrib_incoming_first_packet, fun(#{host := H}) -> H =:= Dc2 end)),
    ?assert(Has(mod_global_distrib_incoming_closed, fun(#{host := H}) -> H =:= <<"dc7.test">> end)),
    ?assert(Has(mod_global_distrib_incoming_errored, fun(M) -> not maps:is_key(host, M) end)),
    [?assert(Has(E, fun(#{K := V, host := H}) -> is_integer(V) andalso H =:= Dc2;
                       (_) -> false end))
     || {E, K} <- [{mod_global_distrib_incoming_messages, count},
                   {mod_global_distrib_incoming_transfer, time},
                   {mod_global_distrib_incoming_queue, time}]],
    ?assert(Has(mod_global_distrib_mapping_fetches,
                fun(#{count := 1, time := Us}) -> Us >= 0 end)),
    ?assert(Has(mod_global_distrib_mapping_cache_misses, fun(#{count := N}) -> N >= 1 end)),
    Ttl = maps:get(message_ttl, rpc(dc1, mod_global_distrib_utils, opts, [], Config)),
    %% alice's stanza arrived with one reroute spent.
    ?assert(Has(mod_global_distrib_delivered_with_ttl, fun(#{value := V}) -> V =:= Ttl - 1 end)),
    ?assert(Has(mod_global_distrib_stop_ttl_zero, fun(#{count := 1}) -> true end)),
    ?assertMatch([#{size := S} | _] when is_integer(S),
                 Executed(mod_global_distrib_bounce_queue)),
    no_violations(Config).

ttl_zero() ->
    F = gd_test_dc:jid(<<"bob">>, <<"r">>),
    T = gd_test_dc:jid(<<"alice">>, <<>>),
    P = gd_test_dc:message(<<"ttl0">>),
    A0 = mod_global_distrib_adapter:new_acc(F, T, P),
    A = lists:foldl(fun({K, V}, Acc) -> mod_global_distrib:put_metadata(Acc, K, V) end,
                    A0, [{origin, <<"dc3.test">>}, {ttl, 0}, {id, <<"i">>}]),
    mod_global_distrib:maybe_reroute({F, T, A, P}, #{}, #{}).

%% rdbms pools are probed (their workers); rabbit pools' connections and
%% publishes are executed as they change.
pool_events(Config) ->
    %% The rabbit pool afresh, so its connections are opened after the clear.
    ok = rpc(dc1, mongoose_wpool, stop, [rabbit, global, metrics], Config),
    rpc(dc1, mongoose_instrument, clear, [], Config),
    {ok, _} = rpc(dc1, mongoose_wpool, start, [rabbit, global, metrics, [{workers, 2}],
                                               #{host => "127.0.0.1"}], Config),
    ok = rpc(dc1, mongoose_instrument, run_probes, [], Config),
    Events = fun(E, L) -> rpc(dc1, mongoose_instrument, events, [E, L], Config) end,
    ?assertEqual([#{workers => 2}], Events(wpool_global_rdbms_stats, #{pool_tag => default})),
    ?assertEqual([#{workers => 3}],
                 Events(wpool_rdbms_stats, #{host_type => ?GLOBAL, pool_tag => default})),
    Publish = {amqp_publish, mongoose_amqp:basic_publish(<<>>, <<"metrics_suite_nowhere">>),
               mongoose_amqp:message(<<"hello">>)},
    [ok = rpc(dc1, mongoose_wpool, call, [rabbit, global, metrics, Publish], Config)
     || _ <- lists:seq(1, 25)],
    Labels = #{host_type => global, pool_tag => metrics},
    Sum = fun(E, K) -> lists:sum([maps:get(K, M, 0) || M <- Events(E, Labels)]) end,
    wait_until(fun() ->
                       ok = rpc(dc1, mongoose_native_metrics, tick, [], Config),
                       Sum(wpool_rabbit_messages_published, count) =:= 25
               end, 5000),
    ?assertEqual(2, Sum(wpool_rabbit_connections, opened)),
    ?assertEqual(2, Sum(wpool_rabbit_connections, active)),
    ?assertEqual(0, Sum(wpool_rabbit_messages_published, failed)),
    %% Nothing new: no event.
    N = length(Events(wpool_rabbit_messages_published, Labels)),
    ok = rpc(dc1, mongoose_native_metrics, tick, [], Config),
    ?assertEqual(N, length(Events(wpool_rabbit_messages_published, Labels))),
    no_violations(Config).

%% Stopping tears the events down, so starting again declares them anew
%% (MongooseIM refuses an event declared twice).
events_torn_down_and_declared_again(Config) ->
    ok = rpc(dc1, mongoose_wpool, stop, [rabbit, global, metrics], Config),
    ok = rpc(dc1, mongoose_wpool, stop, [rdbms, ?GLOBAL, default], Config),
    ok = rpc(dc1, gd_test_dc, stop, [], Config),
    ?assertEqual([lists:keyfind(wpool_global_rdbms_stats, 1, pool_specs_6_3())],
                 rpc(dc1, mongoose_instrument, specs, [], Config)),
    Port = maps:get(port, maps:get(dc1, ?config(dcs, Config))),
    ok = rpc(dc1, mod_global_distrib, start, [?GLOBAL, dc_opts(dc1, Port)], Config),
    {ok, _} = rpc(dc1, mongoose_wpool, start, [rabbit, global, metrics, [{workers, 2}],
                                               #{host => "127.0.0.1"}], Config),
    ?assertEqual(lists:sort(gd_specs_6_3() ++ pool_specs_6_3() --
                                [lists:keyfind(wpool_rdbms_stats, 1, pool_specs_6_3())]),
                 rpc(dc1, mongoose_instrument, specs, [], Config)),
    no_violations(Config).

%%--------------------------------------------------------------------
%% The Prometheus endpoint
%%--------------------------------------------------------------------

endpoint(Config) ->
    {ok, Addr} = rpc(dc1, mongoose_native_metrics, listening, [], Config),
    [Host, Port] = string:split(binary_to_list(Addr), ":", trailing),
    {ok, Ip} = inet:parse_address(Host),
    {Ip, list_to_integer(Port)}.

%% `{Status, Headers, Body}' of one GET.
get(Config, Path) ->
    {Ip, Port} = endpoint(Config),
    {ok, S} = gen_tcp:connect(Ip, Port, [binary, {active, false}], 5000),
    ok = gen_tcp:send(S, ["GET ", Path, " HTTP/1.1\r\nHost: localhost\r\n\r\n"]),
    Reply = read_all(S, <<>>),
    [Head, Body] = binary:split(Reply, <<"\r\n\r\n">>),
    [Status | Headers] = binary:split(Head, <<"\r\n">>, [global]),
    {Status, Headers, Body}.

read_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 5000) of
        {ok, Data} -> read_all(S, <<Acc/binary, Data/binary>>);
        {error, closed} -> Acc
    end.

scrape(Config) ->
    {<<"HTTP/1.1 200 OK">>, Headers, Body} = get(Config, "/metrics"),
    ?assert(lists:member(<<"Content-Type: text/plain; version=0.0.4; charset=utf-8">>, Headers)),
    Body.

%% promtool's verdict on a scrape: `ok' or its complaints.
promtool(Body, Config) ->
    File = filename:join(?config(priv_dir, Config), "scrape.txt"),
    ok = file:write_file(File, Body),
    case os:cmd("promtool check metrics < " ++ File ++ " 2>&1; echo rc=$?") of
        "rc=0\n" -> ok;
        Out -> {promtool, Out}
    end.

%% A series' value (the first whose name and labels start as given).
value(Body, Series) ->
    Prefix = iolist_to_binary(Series),
    case [V || Line <- binary:split(Body, <<"\n">>, [global]),
               binary:longest_common_prefix([Line, Prefix]) =:= byte_size(Prefix),
               [_, V] <- [binary:split(Line, <<" ">>, [trim_all])]] of
        [V | _] ->
            case string:to_integer(V) of
                {I, <<>>} -> I;
                _ -> binary_to_float(V)
            end;
        [] ->
            ct:fail({no_series, Series, Body})
    end.

pool(Type, Tag) ->
    ["{pool_type=\"", Type, "\",host_type=\"global\",pool_tag=\"", Tag, "\""].

metric(Name, Type, Tag) ->
    [Name, pool(Type, Tag), "}"].

kind(Name, Type, Tag, Kind) ->
    [Name, pool(Type, Tag), ",kind=\"", Kind, "\"}"].

%% 64 callers make GETs on a redis pool for three seconds while this node
%% scrapes every 200 ms: each scrape passes promtool, and the pool's
%% counters move between them.
scrapes_under_load_pass_promtool(Config) ->
    {ok, _} = rpc(dc1, mongoose_wpool, start, [redis, global, load, [{workers, 4}],
                                               #{database => ?DB}], Config),
    Callers = rpc(dc1, erlang, apply, [fun load/2, [64, 3000]], Config),
    Requests = metric("mongoose_native_pool_requests_total", "redis", "load"),
    Scrapes = [begin
                   timer:sleep(200),
                   Body = scrape(Config),
                   ?assertEqual(ok, promtool(Body, Config)),
                   value(Body, Requests)
               end || _ <- lists:seq(1, 12)],
    ?assertEqual(Scrapes, lists:sort(Scrapes)),
    ?assert(lists:last(Scrapes) > hd(Scrapes)),
    wait_until(fun() -> lists:all(fun(P) -> not rpc(dc1, erlang, is_process_alive, [P], Config) end,
                                  Callers) end, 10000),
    Body = scrape(Config),
    ?assertEqual(ok, promtool(Body, Config)),
    ?assertEqual(4, value(Body, metric("mongoose_native_pool_workers", "redis", "load"))),
    ?assertEqual(4, value(Body, metric("mongoose_native_pool_connected_workers", "redis", "load"))),
    ?assertEqual(0, value(Body, metric("mongoose_native_pool_in_flight_requests", "redis", "load"))),
    ?assertEqual(0, value(Body, metric("mongoose_native_pool_queue_length", "redis", "load"))),
    Made = value(Body, Requests),
    ?assertEqual(Made, value(Body, metric("mongoose_native_pool_call_duration_seconds_count",
                                          "redis", "load"))),
    ?assertEqual(Made, value(Body, [<<"mongoose_native_pool_call_duration_seconds_bucket">>,
                                    pool("redis", "load"), ",le=\"+Inf\"}"])),
    ct:pal("~p GETs from 64 callers while scraping", [Made]).

%% N processes making GETs until Ms have passed; their pids.
load(N, Ms) ->
    Until = erlang:monotonic_time(millisecond) + Ms,
    [spawn(fun() -> get_until(Until) end) || _ <- lists:seq(1, N)].

get_until(Until) ->
    case erlang:monotonic_time(millisecond) < Until of
        true ->
            {ok, _} = mongoose_wpool:call(redis, global, load, {q, [<<"GET">>, <<"metrics_key">>]}),
            get_until(Until);
        false ->
            ok
    end.

%% Exactly the requests made, errors by kind, timeouts, reconnects and
%% connect failures, and the gauges following the connections.
pool_counters_move(Config) ->
    ok = rpc(dc1, mn_test_redis, start, [?PRIVATE_PORT, []], Config),
    Conn = #{port => ?PRIVATE_PORT},
    {ok, _} = rpc(dc1, mongoose_wpool, start, [redis, global, private, [{workers, 2}], Conn], Config),
    Call = fun(Req) -> rpc(dc1, mongoose_wpool, call, [redis, global, private, {q, Req}], Config) end,
    M = fun(Name) -> metric(Name, "redis", "private") end,
    Requests = M("mongoose_native_pool_requests_total"),
    Server = kind("mongoose_native_pool_errors_total", "redis", "private", "server_error"),
    B0 = scrape(Config),
    [{ok, _} = Call([<<"SET">>, <<"metrics_n">>, <<"x">>]) || _ <- lists:seq(1, 50)],
    [{error, <<"ERR", _/binary>>} = Call([<<"INCR">>, <<"metrics_n">>]) || _ <- lists:seq(1, 5)],
    B1 = scrape(Config),
    ?assertEqual(55, value(B1, Requests) - value(B0, Requests)),
    ?assertEqual(5, value(B1, Server) - value(B0, Server)),
    ?assertEqual(55, value(B1, M("mongoose_native_pool_call_duration_seconds_count"))
                 - value(B0, M("mongoose_native_pool_call_duration_seconds_count"))),
    %% The server closes both connections: replaced, counted.
    _ = os:cmd("redis-cli -p " ++ integer_to_list(?PRIVATE_PORT)
               ++ " CLIENT KILL TYPE normal SKIPME yes"),
    Reconnects = M("mongoose_native_pool_reconnects_total"),
    wait_until(fun() -> value(scrape(Config), Reconnects) - value(B1, Reconnects) =:= 2 end, 5000),
    %% The server goes: no connection, calls refused, reopening fails.
    ok = rpc(dc1, mn_test_redis, stop, [?PRIVATE_PORT], Config),
    Connected = M("mongoose_native_pool_connected_workers"),
    wait_until(fun() -> value(scrape(Config), Connected) =:= 0 end, 5000),
    {error, {no_connection, _}} = Call([<<"PING">>]),
    Failures = M("mongoose_native_pool_connect_failures_total"),
    wait_until(fun() -> value(scrape(Config), Failures) > 0 end, 5000),
    B2 = scrape(Config),
    ?assert(value(B2, kind("mongoose_native_pool_errors_total", "redis", "private",
                           "no_connection")) >= 1),
    ok = rpc(dc1, mn_test_redis, start, [?PRIVATE_PORT, []], Config),
    wait_until(fun() -> value(scrape(Config), Connected) =:= 2 end, 10000),
    ?assert(value(scrape(Config), Reconnects) >= value(B2, Reconnects) + 2),
    %% A caller that gives up (call_timeout 100 ms against 300 ms of work),
    %% and a full queue.
    {ok, _} = rpc(dc1, mongoose_wpool, start,
                  [generic, global, slow, [{workers, 1}, {call_timeout, 100},
                                           {max_worker_queue_len, 1}]], Config),
    ?assertMatch({timeout, _}, rpc(dc1, erlang, apply, [fun slow_call/0, []], Config)),
    Timeouts = metric("mongoose_native_pool_timeouts_total", "generic", "slow"),
    wait_until(fun() -> value(scrape(Config), Timeouts) =:= 1 end, 5000),
    Full = rpc(dc1, erlang, apply, [fun full_queue/0, []], Config),
    ?assert(Full >= 1),
    ?assertEqual(Full, value(scrape(Config), kind("mongoose_native_pool_errors_total", "generic",
                                                  "slow", "no_available_workers"))),
    ?assertEqual(ok, promtool(scrape(Config), Config)).

slow_call() ->
    try mongoose_wpool:call(generic, global, slow, {timer, sleep, [300]})
    catch exit:Reason -> Reason
    end.

%% Five calls at once on one worker with room for one more: the rest exit
%% with no_available_workers; how many did.
full_queue() ->
    Self = self(),
    [spawn(fun() ->
                   R = try mongoose_wpool:call(generic, global, slow, {timer, sleep, [50]})
                       catch exit:no_available_workers -> full;
                             exit:_ -> other
                       end,
                   Self ! {done, R}
           end) || _ <- lists:seq(1, 5)],
    length([full || _ <- lists:seq(1, 5), receive {done, full} -> true; {done, _} -> false end]).

%% mod_global_distrib per remote datacenter: seed 004's counters as
%% `_total', the times as summaries in seconds, the bounce store's size.
gd_peers_in_the_scrape(Config) ->
    connect(dc1, <<"carl">>, Config),
    connect(dc2, <<"dora">>, Config),
    wait_mapped(dc1, <<"dora">>, <<"dc2.test">>, Config),
    wait_mapped(dc2, <<"carl">>, <<"dc1.test">>, Config),
    %% dc1 was restarted: dc2 reconnects to it (meanwhile stanzas bounce).
    delivered(dc2, <<"dora">>, <<"carl">>, dc1, Config),
    delivered(dc1, <<"carl">>, <<"dora">>, dc2, Config),
    Out = "mod_global_distrib_outgoing_messages_total{remote_host=\"dc2.test\"}",
    In = "mod_global_distrib_incoming_messages_total{remote_host=\"dc2.test\"}",
    ok = rpc(dc1, mongoose_native_metrics, tick, [], Config),
    B0 = scrape(Config),
    Before = fun(S) -> try value(B0, S) catch _:_ -> 0 end end,
    [begin
         send(dc1, <<"carl">>, <<"dora">>, integer_to_binary(I), Config),
         recv(dc2, integer_to_binary(I))
     end || I <- lists:seq(1, 10)],
    [begin
         send(dc2, <<"dora">>, <<"carl">>, integer_to_binary(I), Config),
         recv(dc1, integer_to_binary(I))
     end || I <- lists:seq(1, 7)],
    ok = rpc(dc1, mongoose_native_metrics, tick, [], Config),
    Body = scrape(Config),
    ?assertEqual(ok, promtool(Body, Config)),
    ?assertEqual(10, value(Body, Out) - Before(Out)),
    ?assertEqual(7, value(Body, In) - Before(In)),
    ?assert(value(Body, "mod_global_distrib_incoming_transfer_time_seconds_count{remote_host=\"dc2.test\"}") >= 7),
    ?assert(value(Body, "mod_global_distrib_outgoing_queue_time_seconds_count{remote_host=\"dc2.test\"}") >= 10),
    ?assert(is_float(value(Body, "mod_global_distrib_outgoing_queue_time_seconds{remote_host=\"dc2.test\",quantile=\"0.99\"}"))),
    ?assert(value(Body, "mod_global_distrib_mapping_fetches_total") >= 17),
    ?assert(value(Body, "mod_global_distrib_incoming_queue_time_seconds_count") >= 7),
    ?assert(value(Body, "mod_global_distrib_delivered_with_ttl_value_count") >= 7),
    ?assertEqual(0, value(Body, "mod_global_distrib_bounce_queue_size")),
    ?assert(value(Body, "mod_global_distrib_outgoing_established_total{remote_host=\"dc2.test\"}") >= 1).

%% Until eight stanzas in a row from Dc's From reach To on ToDc (each sent
%% by another process, so over any of the connections), the late ones
%% flushed.
delivered(Dc, From, To, ToDc, Config) ->
    wait_until(fun() ->
                       lists:all(fun(_) ->
                                         send(Dc, From, To, <<"probe">>, Config),
                                         receive {stanza, ToDc, <<"probe">>} -> true
                                         after 1000 -> false
                                         end
                                 end, lists:seq(1, 8))
               end, 20000),
    timer:sleep(1000),
    flush_probes().

flush_probes() ->
    receive {stanza, _, <<"probe">>} -> flush_probes()
    after 0 -> ok
    end.

%% Connection options never reach a label (the rdbms pool's password is
%% a canary), and other paths and methods are refused.
no_secret_in_the_scrape(Config) ->
    {ok, _} = rpc(dc1, mongoose_wpool, start, [rdbms, global, canary, [{workers, 1}], rdbms_conn()],
                  Config),
    Body = scrape(Config),
    ?assertEqual(1, value(Body, metric("mongoose_native_pool_workers", "rdbms", "canary"))),
    ?assertEqual(nomatch, binary:match(Body, ?CANARY)),
    ?assertEqual(nomatch, binary:match(Body, <<"postgres">>)),
    ?assertMatch({<<"HTTP/1.1 404 Not Found">>, _, _}, get(Config, "/")),
    ok = rpc(dc1, mongoose_wpool, stop, [rdbms, global, canary], Config),
    ?assertEqual(nomatch, binary:match(scrape(Config), <<"pool_tag=\"canary\"">>)).

%% dc2 has no endpoint; a value that is not an address refuses the start
%% with a clear error.
metrics_listen_off_by_default_and_checked(Config) ->
    ?assertEqual(none, rpc(dc2, mongoose_native_metrics, listening, [], Config)),
    {ok, Peer, Node} = peer:start(#{name => peer:random_name("bad_listen"),
                                    args => ["-setcookie", atom_to_list(erlang:get_cookie())]}),
    try
        ok = erpc:call(Node, code, add_paths, [code:get_path()]),
        Start = fun(V) ->
                        ok = erpc:call(Node, application, set_env, [mongoose_native, metrics_listen, V]),
                        erpc:call(Node, application, ensure_all_started, [mongoose_native])
                end,
        {error, {mongoose_native, R1}} = Start(9105),
        ?assertNotEqual(nomatch, string:find(io_lib:format("~0p", [R1]),
                                             "metrics_listen: expected a string")),
        {error, {mongoose_native, R2}} = Start("256.1.1.1:9105"),
        ?assertNotEqual(nomatch, string:find(io_lib:format("~0p", [R2]),
                                             "metrics_listen: cannot listen on")),
        {ok, _} = Start("127.0.0.1:0"),
        {ok, <<"127.0.0.1:", _/binary>>} = erpc:call(Node, mongoose_native_metrics, listening, [])
    after
        peer:stop(Peer)
    end.
