%% mod_global_distrib end to end: three datacenters, each a separate Erlang
%% node (OTP's `peer') running the library, its own listener and its own
%% mod_global_distrib (local hosts dc1.test, dc2.test, dc3.test; global host
%% example.test), sharing the Redis on 127.0.0.1:6379 (database 11, flushed
%% first). Clients are processes of this node registered as sessions on a
%% datacenter (gd_test_dc): they get what the datacenter's router delivers.
-module(gd_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(DB, 11).
-define(GLOBAL, <<"example.test">>).
-define(DCS, [dc1, dc2, dc3]).

all() ->
    [{group, single}, {group, cluster}].

%% `single': the session table on one Redis (database ?DB), every case.
%% `cluster': the same datacenters with their table on the Redis Cluster of
%% scripts/redis_topologies.sh (issue 20), the cases of messages and moves.
groups() ->
    [{single, [], [messages_both_ways, hundred_messages_in_order, reconnect_to_another_dc,
                   ungraceful_reconnect_to_another_dc, components_and_hidden_domains,
                   stock_mongooseim_pids_decode,
                   bounced_until_mapped_in_order, bounce_gives_up_with_an_error,
                   routing_decisions, endpoints_enabled_and_disabled,
                   disabled_endpoints_collected, waits_for_connection, metrics,
                   start_stop_cleanly, tls_between_datacenters, stopped_dc_fails_fast,
                   unreachable_dc_burst_keeps_its_budget]},
     {cluster, [], [messages_both_ways, hundred_messages_in_order, reconnect_to_another_dc,
                    ungraceful_reconnect_to_another_dc, bounced_until_mapped_in_order,
                    routing_decisions]}].

suite() ->
    [{timetrap, {minutes, 3}}].

init_per_suite(Config) ->
    case node() of
        nonode@nohost ->
            _ = os:cmd("epmd -daemon"),
            {ok, _} = net_kernel:start([list_to_atom("gd_ct_" ++ os:getpid()), shortnames]);
        _ ->
            ok
    end,
    persistent_term:put({?MODULE, log_dir}, ?config(priv_dir, Config)),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_group(single, Config) ->
    persistent_term:put({?MODULE, redis}, {"redis-cli -n " ++ integer_to_list(?DB),
                                           #{database => ?DB}}),
    "OK" ++ _ = redis(["FLUSHDB"]),
    start_dcs(Config);
init_per_group(cluster, Config) ->
    ok = redis_cluster_SUITE:topologies(),
    Ports = [7000, 7001, 7002, 7003, 7004, 7005],
    %% Replicas refuse the flush; their masters' reaches them.
    [os:cmd("redis-cli -p " ++ integer_to_list(P) ++ " FLUSHALL") || P <- Ports],
    Servers = [#{host => <<"127.0.0.1">>, port => P} || P <- Ports],
    persistent_term:put({?MODULE, redis}, {"redis-cli -c -p 7000",
                                           #{mode => <<"cluster">>, servers => Servers}}),
    start_dcs(Config).

end_per_group(_, Config) ->
    [catch peer:stop(Peer) || {_, #{peer := Peer}} <- maps:to_list(?config(dcs, Config))],
    ok.

start_dcs(Config) ->
    Ports = free_ports(length(?DCS)),
    Dcs = [start_dc(Dc, Port) || {Dc, Port} <- lists:zip(?DCS, Ports)],
    [{dcs, maps:from_list(Dcs)} | Config].

init_per_testcase(_, Config) ->
    Config.

end_per_testcase(_, Config) ->
    %% Close every session a case opened.
    [catch erpc:call(N, gd_test_dc, disconnect, [U, R])
     || {_, #{node := N}} <- maps:to_list(?config(dcs, Config)),
        {{U, _, R}, _} <- catch_list(N, mod_global_distrib_adapter, sessions, [])],
    ok.

catch_list(N, M, F, A) ->
    try erpc:call(N, M, F, A, 5000) of
        L when is_list(L) -> [{{U, S, R}, P} || {{U, S, R}, P} <- L];
        _ -> []
    catch _:_ -> []
    end.

%%--------------------------------------------------------------------
%% Datacenters
%%--------------------------------------------------------------------

local_host(Dc) -> <<(atom_to_binary(Dc))/binary, ".test">>.

dc_opts(Dc, Port) ->
    %% dc2 collects disabled endpoints every second, the others rarely.
    Gc = case Dc of dc2 -> 1; _ -> 600 end,
    #{global_host => ?GLOBAL, local_host => local_host(Dc),
      hosts_refresh_interval => 300,
      connections => #{endpoints => [{"127.0.0.1", Port}], connections_per_endpoint => 4,
                       endpoint_refresh_interval => 1,
                       endpoint_refresh_interval_when_empty => 1,
                       disabled_gc_interval => Gc},
      redis => #{expire_after => 3, refresh_after => 1},
      cache => #{jid_lifetime_seconds => 1, domain_lifetime_seconds => 1},
      bounce => #{resend_after_ms => 100, max_retries => 4}}.

start_dc(Dc, Port) ->
    start_dc(Dc, Port, dc_opts(Dc, Port)).

start_dc(Dc, Port, Opts) ->
    start_dc(Dc, Port, Opts, fun(_Node) -> ok end).

%% Prepare(Node) runs on the new node before the library starts there
%% (metrics_SUITE sets the application's environment).
start_dc(Dc, Port, Opts, Prepare) ->
    Cookie = atom_to_list(erlang:get_cookie()),
    {ok, Peer, Node} = peer:start(#{name => peer:random_name(atom_to_list(Dc)),
                                    %% Datacenters talk over their own
                                    %% connections only: no mesh (and no
                                    %% 'global' disconnects when one stops).
                                    args => ["-setcookie", Cookie, "-connect_all", "false",
                                             "-kernel", "prevent_overlapping_partitions",
                                             "false"]}),
    ok = erpc:call(Node, code, add_paths, [code:get_path()]),
    %% Each datacenter's log (warnings and up) in the suite's priv_dir.
    Log = filename:join(persistent_term:get({?MODULE, log_dir}), atom_to_list(Dc) ++ ".log"),
    ok = erpc:call(Node, logger, add_handler, [gd_file, logger_std_h,
                                               #{config => #{file => Log}, level => warning}]),
    ok = Prepare(Node),
    {_, RedisConn} = persistent_term:get({?MODULE, redis}),
    ok = erpc:call(Node, gd_test_dc, start, [local_host(Dc), RedisConn, Opts], 60000),
    {Dc, #{peer => Peer, node => Node, port => Port}}.

free_ports(N) ->
    Socks = [begin
                 {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
                 S
             end || _ <- lists:seq(1, N)],
    Ports = [element(2, inet:port(S)) || S <- Socks],
    [gen_tcp:close(S) || S <- Socks],
    Ports.

node_of(Dc, Config) ->
    #{node := N} = maps:get(Dc, ?config(dcs, Config)),
    N.

rpc(Dc, M, F, A, Config) ->
    erpc:call(node_of(Dc, Config), M, F, A, 30000).

%% A session of User/Resource on Dc whose stanzas come here tagged with Tag.
connect(Dc, User, Resource, Config) ->
    connect(Dc, User, Resource, Dc, Config).

connect(Dc, User, Resource, Tag, Config) ->
    Proxy = connect_proxy(Tag),
    ok = rpc(Dc, gd_test_dc, connect, [User, Resource, Proxy], Config),
    Proxy.

proxy(Parent, Tag) ->
    receive
        {route, From, To, Acc, Packet} ->
            Parent ! {stanza, Tag, From, To, Acc, Packet},
            proxy(Parent, Tag)
    end.

disconnect(Dc, User, Resource, Config) ->
    ok = rpc(Dc, gd_test_dc, disconnect, [User, Resource], Config).

send(Dc, From, ToUser, Body, Config) ->
    ok = rpc(Dc, gd_test_dc, send, [From, ToUser, Body], Config).

%% The next message's body and tag (the datacenter that delivered it).
recv(Timeout) ->
    receive
        {stanza, Tag, _From, _To, _Acc, Packet} -> {Tag, gd_test_dc:body(Packet), Packet}
    after Timeout -> ct:fail(nothing_received)
    end.

recv_bodies(N, Timeout) ->
    [begin {Tag, Body, _} = recv(Timeout), {Tag, Body} end || _ <- lists:seq(1, N)].

nothing_more(Timeout) ->
    receive {stanza, _, _, _, _, _} = S -> ct:fail({unexpected, S})
    after Timeout -> ok
    end.

%% Until F() returns true, for up to Ms.
wait_until(F, Ms) ->
    case F() of
        true -> ok;
        Other when Ms =< 0 -> ct:fail({condition_not_met, Other});
        _ -> timer:sleep(100), wait_until(F, Ms - 100)
    end.

%% Wait until Dc's session table names `Host' for User.
wait_mapped(Dc, User, Host, Config) ->
    wait_until(fun() ->
                       rpc(Dc, mod_global_distrib_mapping, for_jid,
                           [{User, ?GLOBAL, <<>>}], Config) =:= {ok, Host}
               end, 5000).

redis(Args) ->
    {Cli, _} = persistent_term:get({?MODULE, redis}),
    os:cmd(lists:flatten([Cli | [[" ", A] || A <- Args]])).

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

messages_both_ways(Config) ->
    connect(dc1, <<"alice">>, <<"r1">>, Config),
    connect(dc2, <<"bob">>, <<"r2">>, Config),
    connect(dc3, <<"carol">>, <<"r3">>, Config),
    send(dc1, {<<"alice">>, <<"r1">>}, <<"bob">>, <<"a->b">>, Config),
    ?assertMatch({dc2, <<"a->b">>, _}, recv(5000)),
    send(dc2, {<<"bob">>, <<"r2">>}, <<"alice">>, <<"b->a">>, Config),
    ?assertMatch({dc1, <<"b->a">>, _}, recv(5000)),
    send(dc1, {<<"alice">>, <<"r1">>}, <<"carol">>, <<"a->c">>, Config),
    ?assertMatch({dc3, <<"a->c">>, _}, recv(5000)),
    send(dc3, {<<"carol">>, <<"r3">>}, <<"bob">>, <<"c->b">>, Config),
    {dc2, <<"c->b">>, _} = recv(5000),
    receive {stanza, dc2, From, To, Acc, _} -> ct:fail({duplicate, From, To, Acc})
    after 200 -> ok
    end,
    %% The receiving datacenter learnt where the sender is from the origin.
    ?assertEqual({ok, <<"dc3.test">>},
                 rpc(dc2, mod_global_distrib_mapping, for_jid,
                     [{<<"carol">>, ?GLOBAL, <<"r3">>}], Config)),
    %% Between users of one datacenter nothing crosses the network.
    connect(dc1, <<"dave">>, <<"r">>, Config),
    Out = maps:get(mod_global_distrib_outgoing_messages_count, rpc(dc1, mod_global_distrib, metrics, [], Config)),
    send(dc1, {<<"alice">>, <<"r1">>}, <<"dave">>, <<"local">>, Config),
    ?assertMatch({dc1, <<"local">>, _}, recv(5000)),
    ?assertEqual(Out, maps:get(mod_global_distrib_outgoing_messages_count,
                               rpc(dc1, mod_global_distrib, metrics, [], Config))).

hundred_messages_in_order(Config) ->
    connect(dc2, <<"erin">>, <<"r">>, Config),
    wait_mapped(dc1, <<"erin">>, <<"dc2.test">>, Config),
    ok = rpc(dc1, gd_test_dc, send_many, [{<<"frank">>, <<"r">>}, <<"erin">>, <<"m">>, 100], Config),
    Got = recv_bodies(100, 5000),
    ?assertEqual([{dc2, <<"m", (integer_to_binary(I))/binary>>} || I <- lists:seq(1, 100)], Got),
    %% And from three datacenters at once: each sender's stanzas in order.
    connect(dc3, <<"gina">>, <<"r">>, Config),
    wait_mapped(dc1, <<"gina">>, <<"dc3.test">>, Config),
    wait_mapped(dc2, <<"gina">>, <<"dc3.test">>, Config),
    Senders = [{dc1, <<"s1-">>}, {dc2, <<"s2-">>}],
    Parent = self(),
    [spawn_link(fun() ->
                        ok = rpc(Dc, gd_test_dc, send_many, [{Prefix, <<"r">>}, <<"gina">>, Prefix, 100],
                                 Config),
                        Parent ! {sent, Dc}
                end) || {Dc, Prefix} <- Senders],
    All = recv_bodies(200, 5000),
    [?assertEqual([<<P/binary, (integer_to_binary(I))/binary>> || I <- lists:seq(1, 100)],
                  [B || {dc3, B} <- All, binary:part(B, 0, 3) =:= P])
     || {_, P} <- Senders].

reconnect_to_another_dc(Config) ->
    connect(dc2, <<"hank">>, <<"r">>, dc2, Config),
    wait_mapped(dc1, <<"hank">>, <<"dc2.test">>, Config),
    send(dc1, {<<"ivy">>, <<"r">>}, <<"hank">>, <<"before">>, Config),
    ?assertMatch({dc2, <<"before">>, _}, recv(5000)),
    disconnect(dc2, <<"hank">>, <<"r">>, Config),
    connect(dc3, <<"hank">>, <<"r">>, dc3, Config),
    %% dc1 may still have hank cached on dc2: dc2 reroutes (or bounces).
    [send(dc1, {<<"ivy">>, <<"r">>}, <<"hank">>, <<"after", (integer_to_binary(I))/binary>>, Config)
     || I <- lists:seq(1, 10)],
    Got = recv_bodies(10, 10000),
    ?assertEqual(lists:sort([{dc3, <<"after", (integer_to_binary(I))/binary>>} || I <- lists:seq(1, 10)]),
                 lists:sort(Got)),
    %% Once dc1 knows, straight to dc3.
    wait_mapped(dc1, <<"hank">>, <<"dc3.test">>, Config),
    send(dc1, {<<"ivy">>, <<"r">>}, <<"hank">>, <<"later">>, Config),
    {dc3, <<"later">>, _} = recv(5000),
    nothing_more(300).

%% The session on dc2 is still there (a dead connection not noticed yet)
%% when the user connects to dc3; when dc2 finally closes it, the session
%% table keeps dc3's entry (delete only if ours), and stanzas go to dc3.
ungraceful_reconnect_to_another_dc(Config) ->
    connect(dc2, <<"uma">>, <<"r">>, dc2, Config),
    wait_mapped(dc1, <<"uma">>, <<"dc2.test">>, Config),
    connect(dc3, <<"uma">>, <<"r">>, dc3, Config),
    wait_mapped(dc1, <<"uma">>, <<"dc3.test">>, Config),
    disconnect(dc2, <<"uma">>, <<"r">>, Config),
    ?assertEqual("dc3.test\n", redis(["GET", "uma@example.test/r"])),
    ?assertEqual("dc3.test\n", redis(["GET", "uma@example.test"])),
    ok = rpc(dc1, gd_test_dc, send_many, [{<<"vic">>, <<"r">>}, <<"uma">>, <<"m">>, 10], Config),
    ?assertEqual([{dc3, <<"m", (integer_to_binary(I))/binary>>} || I <- lists:seq(1, 10)],
                 recv_bodies(10, 5000)),
    nothing_more(300).

%% Components: svc.example.test on dc2 (public), secret.example.test on dc3
%% (hidden). Both are reachable from dc1; only the public one is listed in
%% public_domains; a component's answer finds its sender's datacenter from
%% the stanza's origin; an unregistered component's domain is forgotten.
components_and_hidden_domains(Config) ->
    Svc = <<"svc.example.test">>,
    Secret = <<"secret.example.test">>,
    ok = rpc(dc2, gd_test_dc, register_component, [Svc, connect_proxy(svc), false], Config),
    ok = rpc(dc3, gd_test_dc, register_component, [Secret, connect_proxy(secret), true], Config),
    wait_until(fun() ->
                       rpc(dc1, mod_global_distrib_mapping, for_domain, [Svc], Config) =:= {ok, <<"dc2.test">>}
                           andalso rpc(dc1, mod_global_distrib_mapping, for_domain, [Secret], Config)
                               =:= {ok, <<"dc3.test">>}
               end, 5000),
    ?assertEqual([Svc], rpc(dc1, mod_global_distrib_mapping, public_domains, [], Config)),
    ?assertEqual(lists:sort([Svc, Secret]),
                 lists:sort(rpc(dc1, mod_global_distrib_mapping, all_domains, [], Config))),
    connect(dc1, <<"wes">>, <<"r">>, Config),
    Wes = {<<"wes">>, ?GLOBAL, <<"r">>},
    ok = rpc(dc1, gd_test_dc, send_from_to, [Wes, {<<>>, Svc, <<>>}, <<"to svc">>], Config),
    ?assertMatch({svc, <<"to svc">>, _}, recv(5000)),
    ok = rpc(dc1, gd_test_dc, send_from_to, [Wes, {<<"x">>, Secret, <<>>}, <<"to secret">>], Config),
    ?assertMatch({secret, <<"to secret">>, _}, recv(5000)),
    %% dc2 learnt wes's datacenter from the stanza (packet_to_component):
    %% the answer goes straight back, with nothing in Redis for wes yet.
    redis(["DEL", "wes@example.test/r", "wes@example.test"]),
    ok = rpc(dc2, gd_test_dc, send_from_to, [{<<>>, Svc, <<>>}, Wes, <<"answer">>], Config),
    ?assertMatch({dc1, <<"answer">>, _}, recv(5000)),
    ok = rpc(dc2, gd_test_dc, unregister_component, [Svc], Config),
    ok = rpc(dc3, gd_test_dc, unregister_component, [Secret], Config),
    ?assertEqual("0\n", redis(["EXISTS", "svc.example.test", "secret.example.test"])),
    ?assertEqual([], rpc(dc1, mod_global_distrib_mapping, public_domains, [], Config)).

%% A stock MongooseIM datacenter (stock.test, node stock1@mim.example,
%% played by a plain gen_tcp peer) sends an accumulator with a pid and a ref
%% of its node. dc2 decodes with [safe], so the stanza is dropped while the
%% node's name means nothing there; once the session table lists the node,
%% the same frame is routed (its worker reads the host's nodes at once; the
%% hosts refresher would on its next poll).
stock_mongooseim_pids_decode(Config) ->
    connect(dc2, <<"xena">>, <<"r">>, Config),
    Node = <<"stock1@mim.example">>,
    N = byte_size(Node),
    Pid = binary_to_term(<<131, 88, 119, N, Node/binary, 7:32, 0:32, 1:32>>),
    Ref = binary_to_term(<<131, 90, 3:16, 119, N, Node/binary, 1:32, 1:32, 2:32, 3:32>>),
    Frame = rpc(dc1, erlang, apply,
                [fun() ->
                         F = gd_test_dc:jid(<<"yuri">>, <<"r">>),
                         T = gd_test_dc:jid(<<"xena">>, <<>>),
                         P = gd_test_dc:message(<<"from stock">>),
                         A0 = (mod_global_distrib_adapter:new_acc(F, T, P))#{origin_pid => Pid,
                                                                             ref => Ref},
                         A = lists:foldl(fun({K, V}, Acc) ->
                                                 mod_global_distrib:put_metadata(Acc, K, V)
                                         end, A0, [{origin, <<"stock.test">>}, {ttl, 3},
                                                   {id, <<"s1">>}]),
                         Key = <<"yuri@example.test/r">>,
                         Bin = term_to_binary({F, T, A, P}),
                         <<(erlang:system_time(microsecond)):64, (byte_size(Key)):16,
                           Key/binary, Bin/binary>>
                 end, []], Config),
    #{port := Port} = maps:get(dc2, ?config(dcs, Config)),
    {ok, S} = gen_tcp:connect("127.0.0.1", Port, [binary, {packet, 4}, {active, false}]),
    ok = gen_tcp:send(S, <<"<gd_start server='stock.test' conn_id='c1'/>">>),
    ok = gen_tcp:send(S, Frame),
    %% (A worker reads a host's nodes at most once a second.)
    nothing_more(1100),
    %% Before the hosts refresher's next poll: the worker reads the nodes.
    ok = rpc(dc2, mod_global_distrib_hosts_refresher, pause, [], Config),
    redis(["HSET", "'stock.test#{nodes}'", binary_to_list(Node),
           integer_to_list(erlang:system_time(second))]),
    redis(["SADD", "hosts", "stock.test"]),
    ok = gen_tcp:send(S, Frame),
    ?assertMatch({dc2, <<"from stock">>, _}, recv(5000)),
    ok = rpc(dc2, mod_global_distrib_hosts_refresher, unpause, [], Config),
    gen_tcp:close(S),
    redis(["DEL", "'stock.test#{nodes}'"]),
    redis(["SREM", "hosts", "stock.test"]),
    rpc(dc2, mod_global_distrib_server_mgr, stop, [<<"stock.test">>], Config).

%% A process here standing in for a session or a component: what it gets
%% comes tagged.
connect_proxy(Tag) ->
    Self = self(),
    spawn_link(fun() -> proxy(Self, Tag) end).

bounced_until_mapped_in_order(Config) ->
    %% 99 stanzas for a user nobody knows yet wait in the bounce store; once
    %% she connects, the 100th follows them, and all arrive in order.
    Bodies = [<<"b", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 100)],
    {Early, [Last]} = lists:split(99, Bodies),
    [send(dc1, {<<"jack">>, <<"r">>}, <<"kate">>, B, Config) || B <- Early],
    ?assertEqual(99, rpc(dc1, mod_global_distrib_bounce, bounce_queue_size, [], Config)),
    ?assertEqual(99, maps:get(mod_global_distrib_bounce_queue_size,
                              rpc(dc1, mod_global_distrib, metrics, [], Config))),
    timer:sleep(250),
    connect(dc2, <<"kate">>, <<"r">>, Config),
    send(dc1, {<<"jack">>, <<"r">>}, <<"kate">>, Last, Config),
    Got = recv_bodies(100, 10000),
    ?assertEqual([{dc2, B} || B <- Bodies], Got),
    ?assertEqual(0, rpc(dc1, mod_global_distrib_bounce, bounce_queue_size, [], Config)),
    nothing_more(300).

%% Nobody ever maps: after max_retries resends the sender gets an error.
bounce_gives_up_with_an_error(Config) ->
    connect(dc1, <<"leo">>, <<"r">>, Config),
    Before = maps:get(mod_global_distrib_stop_ttl_zero_count,
                      rpc(dc1, mod_global_distrib, metrics, [], Config)),
    T0 = erlang:monotonic_time(millisecond),
    send(dc1, {<<"leo">>, <<"r">>}, <<"nobody">>, <<"lost">>, Config),
    {dc1, <<"lost">>, {xmlel, <<"message">>, Attrs, Children}} = recv(5000),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    ?assertEqual(<<"error">>, proplists:get_value(<<"type">>, Attrs)),
    ?assertMatch([_, {xmlel, <<"error">>, _, _}], Children),
    %% 100 + 200 + 400 + 800 ms of backoff.
    ?assert(Elapsed >= 1400, Elapsed),
    ?assertEqual(Before + 1, maps:get(mod_global_distrib_stop_ttl_zero_count,
                                      rpc(dc1, mod_global_distrib, metrics, [], Config))),
    ?assertEqual(0, rpc(dc1, mod_global_distrib_bounce, bounce_queue_size, [], Config)).

%% maybe_reroute/3 itself: same user, TTL zero, TTL decrement, metadata.
routing_decisions(Config) ->
    connect(dc2, <<"mia">>, <<"r">>, Config),
    wait_mapped(dc1, <<"mia">>, <<"dc2.test">>, Config),
    N1 = node_of(dc1, Config),
    Run = fun(F) -> erpc:call(N1, erlang, apply, [F, []]) end,
    %% Two sessions of one user: left alone, no metadata added.
    Same = Run(fun() ->
                       F = gd_test_dc:jid(<<"mia">>, <<"a">>),
                       T = gd_test_dc:jid(<<"mia">>, <<"b">>),
                       P = gd_test_dc:message(<<"x">>),
                       FP = {F, T, mod_global_distrib_adapter:new_acc(F, T, P), P},
                       {FP, mod_global_distrib:maybe_reroute(FP, #{}, #{})}
               end),
    {FPSame, {ok, FPSame}} = Same,
    %% TTL zero: routed locally, counted.
    Zero0 = maps:get(mod_global_distrib_stop_ttl_zero_count, rpc(dc1, mod_global_distrib, metrics, [], Config)),
    {ok, {_, _, AccZ, _}} =
        Run(fun() ->
                    F = gd_test_dc:jid(<<"nina">>, <<"r">>),
                    T = gd_test_dc:jid(<<"mia">>, <<>>),
                    P = gd_test_dc:message(<<"ttl0">>),
                    A0 = mod_global_distrib_adapter:new_acc(F, T, P),
                    A = lists:foldl(fun({K, V}, Acc) -> mod_global_distrib:put_metadata(Acc, K, V) end,
                                    A0, [{origin, <<"dc3.test">>}, {ttl, 0}, {id, <<"i">>}]),
                    mod_global_distrib:maybe_reroute({F, T, A, P}, #{}, #{})
            end),
    ?assertEqual({ok, 0}, mod_global_distrib:find_metadata(AccZ, ttl)),
    ?assertEqual(Zero0 + 1, maps:get(mod_global_distrib_stop_ttl_zero_count,
                                     rpc(dc1, mod_global_distrib, metrics, [], Config))),
    %% A fresh stanza: dropped here, delivered there with TTL message_ttl - 1,
    %% this datacenter as origin, an id.
    {stop, drop} =
        Run(fun() ->
                    F = gd_test_dc:jid(<<"nina">>, <<"r">>),
                    T = gd_test_dc:jid(<<"mia">>, <<>>),
                    P = gd_test_dc:message(<<"fresh">>),
                    %% MongooseIM's accumulators carry a ref and a pid of
                    %% this node, which dc2 could not decode safely.
                    A = (mod_global_distrib_adapter:new_acc(F, T, P))#{ref => make_ref(),
                                                                       origin_pid => self()},
                    mod_global_distrib:maybe_reroute({F, T, A, P}, #{}, #{})
            end),
    {stanza, dc2, _, _, Acc, _} = receive {stanza, _, _, _, _, _} = S -> S after 5000 -> ct:fail(none) end,
    ?assertEqual({ok, 3}, mod_global_distrib:find_metadata(Acc, ttl)),
    ?assertEqual({ok, <<"dc1.test">>}, mod_global_distrib:find_metadata(Acc, origin)),
    #{ref := Ref, origin_pid := OriginPid} = Acc,
    ?assert(is_reference(Ref)),
    ?assertEqual(node_of(dc2, Config), node(OriginPid)),
    {ok, Id} = mod_global_distrib:find_metadata(Acc, id),
    ?assert(is_binary(Id)),
    ?assertEqual(<<"dc1.test">>, mod_global_distrib:get_metadata(Acc, origin)),
    ?assertEqual(none, mod_global_distrib:get_metadata(Acc, nothing_here, none)),
    ?assertEqual({error, undefined},
                 mod_global_distrib:find_metadata(mod_global_distrib:remove_metadata(Acc, id), id)),
    ?assertMatch([{filter_packet, global, _, _, 99}],
                 [H || {filter_packet, _, _, _, _} = H
                           <- rpc(dc1, mod_global_distrib_adapter, registered_hooks, [], Config)]).

%% A fake datacenter dc9.test whose endpoints are plain gen_tcp listeners
%% here: the hosts refresher finds it, its manager enables, disables and
%% closes endpoints as the session table changes, and dc1's stanzas for it
%% arrive in the wire format.
endpoints_enabled_and_disabled(Config) ->
    {ok, LA} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false}, {ip, {127, 0, 0, 1}}]),
    {ok, LB} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false}, {ip, {127, 0, 0, 1}}]),
    {ok, PA} = inet:port(LA),
    {ok, PB} = inet:port(LB),
    Set = "'dc9.test#fake@node#{endpoints}'",
    redis(["HSET", "'dc9.test#{nodes}'", "fake@node", integer_to_list(erlang:system_time(second))]),
    redis(["SADD", Set, "127.0.0.1#" ++ integer_to_list(PA)]),
    redis(["SADD", "hosts", "dc9.test"]),
    ok = rpc(dc1, mod_global_distrib_hosts_refresher, refresh, [], Config),
    Mgr = fun(F) -> rpc(dc1, mod_global_distrib_server_mgr, F, [<<"dc9.test">>], Config) end,
    A = {{127, 0, 0, 1}, PA},
    B = {{127, 0, 0, 1}, PB},
    ?assertEqual([A], Mgr(get_enabled_endpoints)),
    ?assertEqual([], Mgr(get_disabled_endpoints)),
    %% A stanza for a user of dc9.test reaches the listener.
    redis(["SET", "omar@example.test", "dc9.test"]),
    send(dc1, {<<"pia">>, <<"r">>}, <<"omar">>, <<"to-dc9">>, Config),
    {ok, S} = gen_tcp:accept(LA, 5000),
    {ok, Start} = gen_tcp:recv(S, 0, 5000),
    ?assertMatch({match, _}, re:run(Start, "^<gd_start server='dc1.test' conn_id='[^']+'/>$")),
    {ok, <<_Clock:64, KeyLen:16, Key:KeyLen/binary, Bin/binary>>} = gen_tcp:recv(S, 0, 5000),
    ?assertEqual(<<"pia@example.test/r">>, Key),
    {_, _, WireAcc, Packet} = binary_to_term(Bin),
    ?assertEqual(<<"to-dc9">>, gd_test_dc:body(Packet)),
    ?assertEqual({ok, 3}, mod_global_distrib:find_metadata(WireAcc, ttl)),
    %% A second endpoint, given by name: resolved.
    redis(["SADD", Set, "localhost#" ++ integer_to_list(PB)]),
    ok = Mgr(force_refresh),
    ?assertEqual(lists:sort([A, B]), lists:sort(Mgr(get_enabled_endpoints))),
    %% The first one vanishes: disabled, still connected until closed.
    redis(["SREM", Set, "127.0.0.1#" ++ integer_to_list(PA)]),
    ok = Mgr(force_refresh),
    ?assertEqual([B], Mgr(get_enabled_endpoints)),
    ?assertEqual([A], Mgr(get_disabled_endpoints)),
    Transport = fun(Which) ->
                        [{iolist_to_binary(H), P}
                         || {H, P} <- rpc(dc1, erlang, apply,
                                          [fun() -> mongoose_native_gd_transport:Which(
                                                      mod_global_distrib:transport(), <<"dc9.test">>)
                                           end, []], Config)]
                end,
    %% The transport keeps A's connections but picks only B for new stanzas.
    ?assertEqual([{<<"127.0.0.1">>, PB}], Transport(endpoints)),
    ?assertEqual([{<<"127.0.0.1">>, PA}], Transport(disabled_endpoints)),
    ok = Mgr(close_disabled),
    ?assertEqual([], Mgr(get_disabled_endpoints)),
    ?assertEqual([{<<"127.0.0.1">>, PB}], Transport(endpoints)),
    ?assertEqual([], Transport(disabled_endpoints)),
    ?assertMatch(#{server := <<"dc9.test">>, enabled := [B], disabled := []}, Mgr(get_state_info)),
    %% It comes back: enabled again.
    redis(["SADD", Set, "127.0.0.1#" ++ integer_to_list(PA)]),
    ok = Mgr(force_refresh),
    ?assertEqual(lists:sort([A, B]), lists:sort(Mgr(get_enabled_endpoints))),
    gen_tcp:close(S),
    redis(["DEL", Set, "'dc9.test#{nodes}'", "omar@example.test"]),
    redis(["SREM", "hosts", "dc9.test"]),
    ok = Mgr(force_refresh),
    [gen_tcp:close(L) || L <- [LA, LB]].

%% dc2 sweeps disabled endpoints every second (disabled_gc_interval = 1).
disabled_endpoints_collected(Config) ->
    Set = "'dc8.test#fake@node#{endpoints}'",
    redis(["HSET", "'dc8.test#{nodes}'", "fake@node", integer_to_list(erlang:system_time(second))]),
    redis(["SADD", Set, "127.0.0.1#1", "127.0.0.1#2"]),
    redis(["SADD", "hosts", "dc8.test"]),
    ok = rpc(dc2, mod_global_distrib_hosts_refresher, refresh, [], Config),
    Mgr = fun(F) -> rpc(dc2, mod_global_distrib_server_mgr, F, [<<"dc8.test">>], Config) end,
    ok = Mgr(force_refresh),
    ?assertEqual([{{127, 0, 0, 1}, 1}, {{127, 0, 0, 1}, 2}], lists:sort(Mgr(get_enabled_endpoints))),
    redis(["SREM", Set, "127.0.0.1#2"]),
    ok = Mgr(force_refresh),
    ?assertEqual([{{127, 0, 0, 1}, 2}], Mgr(get_disabled_endpoints)),
    wait_until(fun() -> Mgr(get_disabled_endpoints) =:= [] end, 3000),
    ?assertEqual([{{127, 0, 0, 1}, 1}], Mgr(get_enabled_endpoints)),
    redis(["DEL", Set, "'dc8.test#{nodes}'"]),
    redis(["SREM", "hosts", "dc8.test"]).

%% A fake datacenter dc7.test that has published no endpoint yet: a stanza
%% for its user waits in its sender (as with MongooseIM's
%% wait_for_connection) and leaves as soon as dc1's manager, refreshing
%% every second while it has none, finds the endpoint. With none found
%% within 5 s, the sender gets an error instead.
waits_for_connection(Config) ->
    {ok, L} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false}, {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    Set = "'dc7.test#fake@node#{endpoints}'",
    redis(["HSET", "'dc7.test#{nodes}'", "fake@node", integer_to_list(erlang:system_time(second))]),
    redis(["SADD", "hosts", "dc7.test"]),
    redis(["SET", "olga@example.test", "dc7.test"]),
    Mgr = fun(F) -> rpc(dc1, mod_global_distrib_server_mgr, F, [<<"dc7.test">>], Config) end,
    connect(dc1, <<"paul">>, <<"r">>, Config),
    Self = self(),
    SendInBackground =
        fun(Body) ->
                spawn_link(fun() ->
                                   T0 = erlang:monotonic_time(millisecond),
                                   send(dc1, {<<"paul">>, <<"r">>}, <<"olga">>, Body, Config),
                                   Self ! {sent, Body, erlang:monotonic_time(millisecond) - T0}
                           end)
        end,
    SendInBackground(<<"waited">>),
    receive {sent, _, _} = Early -> ct:fail({returned_without_a_connection, Early})
    after 1500 -> ok
    end,
    ?assertEqual([], Mgr(get_enabled_endpoints)),
    redis(["SADD", Set, "127.0.0.1#" ++ integer_to_list(Port)]),
    receive {sent, <<"waited">>, Ms} -> ?assert(Ms >= 1500 andalso Ms < 5000)
    after 5000 -> ct:fail(sender_still_waiting)
    end,
    {ok, S} = gen_tcp:accept(L, 5000),
    {ok, <<"<gd_start", _/binary>>} = gen_tcp:recv(S, 0, 5000),
    {ok, <<_Clock:64, KeyLen:16, _Key:KeyLen/binary, Bin/binary>>} = gen_tcp:recv(S, 0, 5000),
    {_, _, _, Packet} = binary_to_term(Bin),
    ?assertEqual(<<"waited">>, gd_test_dc:body(Packet)),
    %% The endpoint goes away and nothing replaces it: after 5 s of waiting
    %% the stanza is bounced, then answered with an error.
    redis(["SREM", Set, "127.0.0.1#" ++ integer_to_list(Port)]),
    ok = Mgr(force_refresh),
    ?assertEqual([], Mgr(get_enabled_endpoints)),
    SendInBackground(<<"nobody">>),
    receive {sent, <<"nobody">>, Ms2} -> ?assert(Ms2 >= 4900)
    after 8000 -> ct:fail(sender_waits_forever)
    end,
    redis(["DEL", "olga@example.test"]),
    {dc1, <<"nobody">>, {xmlel, _, Attrs, _}} = recv(8000),
    ?assertEqual(<<"error">>, proplists:get_value(<<"type">>, Attrs)),
    gen_tcp:close(S),
    gen_tcp:close(L),
    redis(["DEL", Set, "'dc7.test#{nodes}'"]),
    redis(["SREM", "hosts", "dc7.test"]).

metrics(Config) ->
    Names = [outgoing_messages_count, incoming_messages_count, incoming_transfer_time,
             outgoing_queue_time, incoming_queue_time, incoming_established_count,
             incoming_first_packet_count, incoming_closed_count, incoming_errored_count,
             outgoing_established_count, outgoing_closed_count, outgoing_errored_count,
             mapping_fetches_time, mapping_fetches_count, mapping_cache_misses_count,
             delivered_with_ttl_value, stop_ttl_zero_count, bounce_queue_size],
    [begin
         M = rpc(Dc, mod_global_distrib, metrics, [], Config),
         [?assert(maps:is_key(binary_to_atom(<<"mod_global_distrib_", (atom_to_binary(N))/binary>>), M),
                  {Dc, N}) || N <- Names],
         ?assert(maps:get(mod_global_distrib_outgoing_messages_count, M) > 0),
         ?assert(maps:get(mod_global_distrib_incoming_messages_count, M) > 0),
         #{count := TC} = maps:get(mod_global_distrib_incoming_transfer_time, M),
         ?assert(TC > 0),
         #{count := DC, max := Max} = maps:get(mod_global_distrib_delivered_with_ttl_value, M),
         ?assert(DC > 0),
         ?assert(Max =< 4)
     end || Dc <- [dc1, dc2, dc3]].

%% On this node (dc4.test): failed starts leave nothing behind, only the
%% global host's start counts, stop removes everything; with bounce off an
%% unknown recipient is answered with an error at once.
start_stop_cleanly(Config) ->
    application:set_env(mongoose_native, hosts, [?GLOBAL, <<"dc4.test">>]),
    {ok, _} = application:ensure_all_started(mongoose_native),
    {ok, _} = mongoose_wpool:start(redis, global, global_distrib, [{workers, 2}],
                                   #{database => ?DB}),
    Children = fun() -> [Id || {Id, _, _, _} <- supervisor:which_children(mongoose_native_sup),
                               Id =/= mod_global_distrib_adapter_sessions] end,
    Children0 = Children(),
    [Port] = free_ports(1),
    Opts = fun(Extra) ->
                   maps:merge(#{global_host => ?GLOBAL, local_host => <<"dc4.test">>,
                                connections => #{endpoints => [{"127.0.0.1", Port}]}}, Extra)
           end,
    Nothing = fun() ->
                      ?assertEqual(Children0, Children()),
                      ?assertEqual([], mod_global_distrib_adapter:registered_hooks()),
                      ?assertMatch({error, {not_started, _}}, mod_global_distrib_mapping:metrics())
              end,
    ?assertMatch({error, {invalid_config, _}},
                 mod_global_distrib:start(?GLOBAL, Opts(#{message_ttl => -1}))),
    Nothing(),
    #{port := Dc1Port} = maps:get(dc1, ?config(dcs, Config)),
    ?assertMatch({error, _},
                 mod_global_distrib:start(?GLOBAL, Opts(#{connections => #{endpoints => [{"127.0.0.1", Dc1Port}]}}))),
    Nothing(),
    ok = mod_global_distrib:start(<<"dc4.test">>, Opts(#{})),
    Nothing(),
    %% Options as MongooseIM's config processing hands them over.
    Processed = mod_global_distrib:process_opts(Opts(#{bounce => #{enabled => false}})),
    ?assertMatch(#{connections := #{advertised_endpoints := [{"127.0.0.1", Port}],
                                    resolved_endpoints := [{{127, 0, 0, 1}, Port}]}}, Processed),
    ok = mod_global_distrib:start(?GLOBAL, Processed),
    ?assertEqual(6, length(mod_global_distrib_adapter:registered_hooks())),
    ?assertMatch({error, {invalid_config, _}}, mod_global_distrib:start(?GLOBAL, Opts(#{}))),
    ok = gd_test_dc:connect(<<"tom">>, <<"r">>, self()),
    ok = gd_test_dc:send({<<"tom">>, <<"r">>}, <<"nobody2">>, <<"x">>),
    receive {route, _, _, _, {xmlel, _, Attrs, _}} ->
            ?assertEqual(<<"error">>, proplists:get_value(<<"type">>, Attrs))
    after 1000 -> ct:fail(no_error)
    end,
    ?assertEqual(0, mod_global_distrib_bounce:bounce_queue_size()),
    ok = gd_test_dc:disconnect(<<"tom">>, <<"r">>),
    ok = mod_global_distrib:stop(<<"dc4.test">>),
    ?assertEqual(6, length(mod_global_distrib_adapter:registered_hooks())),
    ok = mod_global_distrib:stop(?GLOBAL),
    Nothing(),
    redis(["SREM", "hosts", "dc4.test"]),
    mongoose_wpool:stop(redis, global, global_distrib).

%% Two more datacenters whose connections use TLS (certificates from one
%% CA): stanzas both ways.
tls_between_datacenters(Config) ->
    Certs = mn_test_certs:make(?config(priv_dir, Config)),
    Tls = #{certfile => maps:get(dc, Certs), cacertfile => maps:get(ca, Certs)},
    Ports = free_ports(2),
    Dcs = [begin
               #{connections := C} = O = dc_opts(Dc, Port),
               start_dc(Dc, Port, O#{connections := C#{tls => Tls}})
           end || {Dc, Port} <- lists:zip([dc5, dc6], Ports)],
    Config1 = [{dcs, maps:merge(?config(dcs, Config), maps:from_list(Dcs))} | Config],
    try
        connect(dc5, <<"uma">>, <<"r">>, Config1),
        connect(dc6, <<"vic">>, <<"r">>, Config1),
        wait_mapped(dc5, <<"vic">>, <<"dc6.test">>, Config1),
        send(dc5, {<<"uma">>, <<"r">>}, <<"vic">>, <<"secret">>, Config1),
        ?assertMatch({dc6, <<"secret">>, _}, recv(5000)),
        send(dc6, {<<"vic">>, <<"r">>}, <<"uma">>, <<"reply">>, Config1),
        ?assertMatch({dc5, <<"reply">>, _}, recv(5000)),
        ?assertEqual(0, maps:get(mod_global_distrib_incoming_errored_count,
                                 rpc(dc6, mod_global_distrib, metrics, [], Config1)))
    after
        [peer:stop(Peer) || {_, #{peer := Peer}} <- Dcs],
        [redis(["SREM", "hosts", binary_to_list(local_host(Dc))]) || Dc <- [dc5, dc6]]
    end.

%% dc3 goes away for good: once its entries expire from the session table
%% (expire_after = 3 s), stanzas for its users are bounced, then answered
%% with an error; nothing waits for dc3.
stopped_dc_fails_fast(Config) ->
    connect(dc1, <<"quinn">>, <<"r">>, Config),
    connect(dc3, <<"rita">>, <<"r">>, Config),
    wait_mapped(dc1, <<"rita">>, <<"dc3.test">>, Config),
    send(dc1, {<<"quinn">>, <<"r">>}, <<"rita">>, <<"hello">>, Config),
    {dc3, <<"hello">>, _} = recv(5000),
    #{peer := Peer3} = maps:get(dc3, ?config(dcs, Config)),
    ok = peer:stop(Peer3),
    wait_until(fun() -> redis(["EXISTS", "rita@example.test"]) =:= "0\n" end, 6000),
    timer:sleep(1100),
    T0 = erlang:monotonic_time(millisecond),
    send(dc1, {<<"quinn">>, <<"r">>}, <<"rita">>, <<"anyone?">>, Config),
    {dc1, <<"anyone?">>, {xmlel, _, Attrs, _}} = recv(5000),
    ?assertEqual(<<"error">>, proplists:get_value(<<"type">>, Attrs)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 4000),
    %% dc1 and dc2 still talk.
    connect(dc2, <<"sam">>, <<"r">>, Config),
    wait_mapped(dc1, <<"sam">>, <<"dc2.test">>, Config),
    send(dc1, {<<"quinn">>, <<"r">>}, <<"sam">>, <<"still here">>, Config),
    {dc2, <<"still here">>, _} = recv(5000),
    ?assertEqual(0, rpc(dc1, mod_global_distrib_bounce, bounce_queue_size, [], Config)).

%% Ten stanzas at once for a user mapped to a datacenter whose endpoint
%% refuses connections: each new stanza for the pair has the ones held
%% before it flushed, and that early try must not cost them a retry, or the
%% first ones run out of retries within milliseconds. Every stanza gets its
%% whole budget (100 + 200 + 400 + 800 ms of backoff), then an error, in
%% the order they were sent.
unreachable_dc_burst_keeps_its_budget(Config) ->
    [Port] = free_ports(1),
    Nodes = "'dc9.test#{nodes}'",
    Endpoints = "'dc9.test#fake@node#{endpoints}'",
    redis(["HSET", Nodes, "fake@node", integer_to_list(erlang:system_time(second))]),
    redis(["SADD", Endpoints, "127.0.0.1#" ++ integer_to_list(Port)]),
    redis(["SADD", "hosts", "dc9.test"]),
    redis(["SET", "vera@example.test", "dc9.test"]),
    try
        connect(dc1, <<"walt">>, <<"r">>, Config),
        wait_mapped(dc1, <<"vera">>, <<"dc9.test">>, Config),
        Bodies = [<<"b", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 10)],
        T0 = erlang:monotonic_time(millisecond),
        [send(dc1, {<<"walt">>, <<"r">>}, <<"vera">>, B, Config) || B <- Bodies],
        Errors = [begin
                      {dc1, Body, {xmlel, _, Attrs, _}} = recv(10000),
                      {Body, proplists:get_value(<<"type">>, Attrs),
                       erlang:monotonic_time(millisecond) - T0}
                  end || _ <- Bodies],
        ct:pal("errors (body, type, ms after the first send): ~p", [Errors]),
        ?assertEqual(Bodies, [B || {B, _, _} <- Errors]),
        ?assertEqual([<<"error">>], lists:usort([T || {_, T, _} <- Errors])),
        Early = [E || {_, _, Elapsed} = E <- Errors, Elapsed < 1400],
        ?assertEqual([], Early)
    after
        redis(["DEL", Nodes, Endpoints, "vera@example.test"]),
        redis(["SREM", "hosts", "dc9.test"])
    end,
    ?assertEqual(0, rpc(dc1, mod_global_distrib_bounce, bounce_queue_size, [], Config)).
