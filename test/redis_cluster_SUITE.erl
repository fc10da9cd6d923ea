%% The redis pool type in cluster and sentinel modes, through mongoose_redis
%% and mongoose_wpool, against a real Redis Cluster (7000-7005: three
%% masters, one replica each) and a real sentinel group (master and replica
%% on 7100-7101, sentinels on 26400-26402), which scripts/redis_topologies.sh
%% starts. Tests that kill or fail over nodes leave the topology whole again.
-module(redis_cluster_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(SEEDS, [7000, 7001, 7002]).
-define(CLUSTER_PORTS, [7000, 7001, 7002, 7003, 7004, 7005]).
-define(SENTINELS, [26400, 26401, 26402]).
-define(MASTER_NAME, <<"mymaster">>).

all() ->
    [{group, config}, {group, cluster}, {group, sentinel}].

groups() ->
    [{config, [], [config_errors_name_the_option, legacy_tuples_and_toml,
                   unreachable_cluster_fails_start, unreachable_sentinels_fail_start]},
     {cluster, [], [keys_across_slots, pipeline_across_slots, crossslot_refused,
                    keyless_commands, reads_from_replicas, slot_migration_under_load,
                    manual_failover_under_load, master_killed_under_load]},
     {sentinel, [], [sentinel_commands, sentinel_reads_from_replicas,
                     sentinel_failover_under_load, sentinel_master_killed_under_load]}].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    ok = topologies(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_group(_, Config) ->
    Config.

end_per_group(_, _Config) ->
    ok.

init_per_testcase(_, Config) ->
    %% The cluster group's tests start from empty masters.
    [cli(P, ["FLUSHALL"]) || P <- master_ports()],
    Config.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    %% Whatever a test killed comes back (as a replica of its successor).
    ok = topologies().

%%--------------------------------------------------------------------
%% config

config_errors_name_the_option(_Config) ->
    Servers = servers(?SEEDS),
    Err = fun(Conn) ->
                  {error, {invalid_config, Msg}} = mongoose_wpool:start(redis, global, bad, [], Conn),
                  Msg
          end,
    ?assertMatch(<<"outgoing_pools.redis.bad.connection.mode: expected one of single, cluster, sentinel", _/binary>>,
                 strip(Err(#{mode => <<"ring">>}))),
    ?assertMatch(<<"outgoing_pools.redis.bad.connection.servers: required", _/binary>>,
                 strip(Err(#{mode => <<"cluster">>}))),
    ?assertMatch(<<"outgoing_pools.redis.bad.connection.servers[1].port: expected an integer", _/binary>>,
                 strip(Err(#{mode => <<"cluster">>,
                             servers => [#{host => <<"a">>}, #{host => <<"b">>, port => 0}]}))),
    ?assertMatch(<<"outgoing_pools.redis.bad.connection.master_name: required", _/binary>>,
                 strip(Err(#{mode => <<"sentinel">>, servers => servers(?SENTINELS)}))),
    ?assertMatch(<<"outgoing_pools.redis.bad.connection.host: only used with mode = \"single\"", _/binary>>,
                 strip(Err(#{mode => <<"cluster">>, servers => Servers, host => <<"x">>}))),
    ?assertMatch(<<"outgoing_pools.redis.bad.connection.servers: only used with mode", _/binary>>,
                 strip(Err(#{servers => Servers}))),
    ?assertMatch(<<"outgoing_pools.redis.bad.connection.database: expected 0", _/binary>>,
                 strip(Err(#{mode => <<"cluster">>, servers => Servers, database => 3}))),
    %% The password is never shown, even where it is wrong.
    Msg = Err(#{mode => <<"cluster">>, servers => Servers, password => 42}),
    ?assertEqual(nomatch, binary:match(Msg, <<"42">>)).

%% Some error paths carry the pool's name in another form; compare from "outgoing_pools".
strip(Msg) ->
    case binary:match(Msg, <<"outgoing_pools.">>) of
        {Pos, _} -> binary:part(Msg, Pos, byte_size(Msg) - Pos);
        nomatch -> Msg
    end.

%% Seed 000's tuples ({mode, cluster}, {Host, Port} servers) and the TOML
%% form of the example file start the same pools.
legacy_tuples_and_toml(_Config) ->
    {ok, _} = mongoose_wpool:start(redis, global, legacy, [{workers, 1}],
                                   [{mode, cluster}, {servers, [{"127.0.0.1", 7001}]}]),
    ?assertEqual({ok, <<"OK">>},
                 mongoose_wpool:call(redis, global, legacy, {q, ["SET", "legacy", "1"]})),
    {ok, _} = mongoose_wpool:start(redis, global, legacy_s, [{workers, 1}],
                                   [{mode, sentinel}, {servers, [{"127.0.0.1", 26401}]},
                                    {master_name, "mymaster"}]),
    ?assertEqual({ok, <<"PONG">>}, mongoose_wpool:call(redis, global, legacy_s, {q, ["PING"]})),
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    Example = filename:join([filename:dirname(filename:dirname(Source)), "examples", "redis.toml"]),
    {ok, Pools} = mongoose_native_config:pools_from_toml(Example),
    Started = mongoose_wpool:start_configured_pools(
                [P || P = #{tag := Tag} <- Pools, Tag =:= cluster orelse Tag =:= sentinel]),
    ?assertMatch([{ok, _}, {ok, _}], Started),
    ?assertEqual({ok, <<"1">>}, mongoose_wpool:call(redis, global, cluster, {q, ["GET", "legacy"]})),
    ?assertEqual({ok, <<"PONG">>}, mongoose_wpool:call(redis, global, sentinel, {q, ["PING"]})).

unreachable_cluster_fails_start(_Config) ->
    T0 = erlang:monotonic_time(millisecond),
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(redis, global, nowhere, [{workers, 2}],
                             #{mode => <<"cluster">>, servers => servers([1, 2])}),
    ct:pal("~s", [Msg]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"redis cluster (seeds 127.0.0.1:1,127.0.0.1:2)">>)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 7000).

unreachable_sentinels_fail_start(_Config) ->
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(redis, global, nowhere, [{workers, 2}],
                             #{mode => <<"sentinel">>, servers => servers([1]),
                               master_name => ?MASTER_NAME}),
    ct:pal("~s", [Msg]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"master mymaster (sentinels 127.0.0.1:1)">>)),
    %% Sentinels that answer but do not know the name.
    {error, {connect_failed, Unknown}} =
        mongoose_wpool:start(redis, global, nowhere, [{workers, 2}],
                             #{mode => <<"sentinel">>, servers => servers(?SENTINELS),
                               master_name => <<"nosuchmaster">>}),
    ct:pal("~s", [Unknown]),
    ?assertNotEqual(nomatch, binary:match(Unknown, <<"nosuchmaster">>)).

%%--------------------------------------------------------------------
%% cluster

keys_across_slots(_Config) ->
    {ok, _} = start_cluster_pool(default, [], #{}),
    Keys = [<<"key:", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 500)],
    [<<"OK">> = mongoose_redis:cmd([<<"SET">>, K, K]) || K <- Keys],
    [?assertEqual(K, mongoose_redis:cmd([<<"GET">>, K])) || K <- Keys],
    Slots = lists:usort([mongoose_redis:cmd(["CLUSTER", "KEYSLOT", K]) || K <- Keys]),
    ?assert(length(Slots) > 400),
    %% Every master holds some of them.
    Held = [{P, binary_to_integer(cli(P, ["DBSIZE"]))} || P <- master_ports()],
    ct:pal("keys per master: ~p", [Held]),
    ?assertEqual(3, length(Held)),
    [?assert(N > 50) || {_, N} <- Held],
    %% DEL, MGET and EXISTS across slots are split by slot, not refused.
    ?assertEqual([<<"key:1">>, <<"key:2">>, undefined],
                 mongoose_redis:cmd([<<"MGET">>, <<"key:1">>, <<"key:2">>, <<"nokey">>])),
    ?assertEqual(<<"500">>, mongoose_redis:cmd([<<"DEL">> | Keys])).

pipeline_across_slots(_Config) ->
    {ok, _} = start_cluster_pool(default, [], #{}),
    ?assertNotEqual(mongoose_redis:cmd(["CLUSTER", "KEYSLOT", "a"]),
                    mongoose_redis:cmd(["CLUSTER", "KEYSLOT", "b"])),
    R = mongoose_redis:cmds([["SET", "a", "1"], ["SET", "b", "2"], ["INCR", "a"], ["GET", "b"],
                             ["LPUSH", "a", "x"], ["GET", "a"], ["PING"],
                             ["MGET", "a", "b"], ["SET", "{t}1", "x"], ["GET", "{t}1"],
                             ["DEL", "a", "b", "{t}1"]]),
    ?assertMatch([{ok, <<"OK">>}, {ok, <<"OK">>}, {ok, <<"2">>}, {ok, <<"2">>},
                  {error, <<"WRONGTYPE", _/binary>>}, {ok, <<"2">>}, {ok, <<"PONG">>},
                  {ok, [<<"2">>, <<"2">>]}, {ok, <<"OK">>}, {ok, <<"x">>}, {ok, <<"3">>}], R),
    %% A large one: every answer in the caller's order.
    N = 1000,
    Keys = [<<"p:", (integer_to_binary(I))/binary>> || I <- lists:seq(1, N)],
    Sets = mongoose_redis:cmds([["SET", K, K] || K <- Keys]),
    ?assertEqual(lists:duplicate(N, {ok, <<"OK">>}), Sets),
    Gets = mongoose_redis:cmds([["GET", K] || K <- Keys]),
    ?assertEqual([{ok, K} || K <- Keys], Gets).

crossslot_refused(_Config) ->
    {ok, _} = start_cluster_pool(default, [], #{}),
    {ok, _} = q(["SADD", "a", "1"]),
    ?assertMatch({error, <<"CROSSSLOT", _/binary>>}, mongoose_redis:cmd(["SUNIONSTORE", "a", "b", "c"])),
    ?assertMatch({error, <<"CROSSSLOT", _/binary>>}, mongoose_redis:cmd(["RENAME", "a", "b"])),
    %% Nothing ran: a is still a set, b does not exist.
    ?assertEqual([<<"1">>], mongoose_redis:cmd(["SMEMBERS", "a"])),
    ?assertEqual(<<"0">>, mongoose_redis:cmd(["EXISTS", "b"])),
    %% A transaction must stay in one slot; hash tags make it so.
    Cross = mongoose_redis:cmds([["MULTI"], ["SET", "a", "1"], ["SET", "b", "1"], ["EXEC"]]),
    ct:pal("a transaction across slots: ~p", [Cross]),
    [?assertMatch({error, <<"CROSSSLOT", _/binary>>}, E) || E <- Cross],
    ?assertEqual(<<"0">>, mongoose_redis:cmd(["EXISTS", "b"])),
    ?assertEqual([{ok, <<"OK">>}, {ok, <<"QUEUED">>}, {ok, <<"QUEUED">>}, {ok, [<<"OK">>, <<"2">>]}],
                 mongoose_redis:cmds([["MULTI"], ["SET", "{u}a", "1"], ["INCR", "{u}a"], ["EXEC"]])).

keyless_commands(_Config) ->
    {ok, _} = start_cluster_pool(default, [], #{}),
    ?assertEqual(<<"PONG">>, mongoose_redis:cmd(["PING"])),
    [<<"OK">> = mongoose_redis:cmd(["SET", integer_to_list(I), "v"]) || I <- lists:seq(1, 30)],
    %% DBSIZE, KEYS and FLUSHALL go to every master, and the answers add up.
    ?assertEqual(<<"30">>, mongoose_redis:cmd(["DBSIZE"])),
    ?assertEqual(30, length(mongoose_redis:cmd(["KEYS", "*"]))),
    ?assertEqual(<<"OK">>, mongoose_redis:cmd(["FLUSHALL"])),
    ?assertEqual(<<"0">>, mongoose_redis:cmd(["DBSIZE"])).

%% GETs go to replicas: the replicas' GET counters grow, the masters' do not.
reads_from_replicas(_Config) ->
    {ok, _} = start_cluster_pool(default, [], #{read_from_replicas => true}),
    Keys = [<<"r:", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 30)],
    [<<"OK">> = mongoose_redis:cmd(["SET", K, K]) || K <- Keys],
    [wait_replicated(P) || P <- master_ports()],
    Before = get_calls(),
    [?assertEqual(K, mongoose_redis:cmd(["GET", K])) || _ <- lists:seq(1, 10), K <- Keys],
    After = get_calls(),
    Grew = [{P, maps:get(P, After) - maps:get(P, Before, 0)} || P <- maps:keys(After)],
    ct:pal("GETs per node: ~p (masters ~p)", [Grew, master_ports()]),
    ?assertEqual(0, lists:sum([N || {P, N} <- Grew, lists:member(P, master_ports())])),
    ?assertEqual(300, lists:sum([N || {P, N} <- Grew, not lists:member(P, master_ports())])),
    %% Writes still go to masters.
    ?assertEqual(<<"OK">>, mongoose_redis:cmd(["SET", "r:1", "new"])).

%% A slot moves from one master to another (keys MIGRATEd: ASK, then
%% MOVED) while 20 callers INCR keys in it: no call fails.
slot_migration_under_load(_Config) ->
    {ok, _} = start_cluster_pool(default, [{workers, 4}, {call_timeout, 2000}], #{}),
    Keys = [<<"{mig}", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 200)],
    [<<"OK">> = mongoose_redis:cmd(["SET", K, "0"]) || K <- Keys],
    Slot = binary_to_integer(mongoose_redis:cmd(["CLUSTER", "KEYSLOT", "{mig}"])),
    Source = slot_owner(Slot),
    [Target | _] = master_ports() -- [Source],
    Load = start_load(20, fun(I) -> q(["INCR", lists:nth(I rem 200 + 1, Keys)]) end),
    timer:sleep(300),
    migrate_slot(Slot, Source, Target),
    timer:sleep(500),
    Report = stop_load(Load),
    ct:pal("calls while slot ~p moved from ~p to ~p: ~p", [Slot, Source, Target, Report]),
    ?assertEqual(Target, slot_owner(Slot)),
    ?assertEqual(0, maps:get(failed, Report)),
    ?assert(maps:get(ok, Report) > 100),
    %% Every INCR counted once.
    Total = lists:sum([binary_to_integer(mongoose_redis:cmd(["GET", K])) || K <- Keys]),
    ?assertEqual(maps:get(ok, Report), Total),
    migrate_slot(Slot, Target, Source).

%% CLUSTER FAILOVER on a replica: its master steps down, the client gets
%% MOVED and follows the new master.
manual_failover_under_load(_Config) ->
    {ok, _} = start_cluster_pool(default, [{workers, 4}, {call_timeout, 2000}], #{}),
    Slot = binary_to_integer(mongoose_redis:cmd(["CLUSTER", "KEYSLOT", "fo"])),
    Master = slot_owner(Slot),
    [Replica] = replicas_of(Master),
    Load = start_load(20, fun(_) -> q(["INCR", "fo"]) end),
    timer:sleep(300),
    "OK" = string:trim(cli_s(Replica, ["CLUSTER", "FAILOVER"])),
    wait_until(fun() -> slot_owner(Slot) =:= Replica end, 100),
    timer:sleep(500),
    Report = stop_load(Load),
    ct:pal("calls during CLUSTER FAILOVER of ~p to ~p: ~p", [Master, Replica, Report]),
    ?assertEqual(0, maps:get(failed, Report)),
    ?assertEqual(maps:get(ok, Report), binary_to_integer(mongoose_redis:cmd(["GET", "fo"]))).

%% kill -9 of a master under 100 callers: its replica takes over (node
%% timeout 2 s) and calls succeed again; no call outlives call_timeout.
master_killed_under_load(_Config) ->
    CallTimeout = 1000,
    {ok, _} = start_cluster_pool(default, [{workers, 8}, {call_timeout, CallTimeout}], #{}),
    Keys = [<<"kill:", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 100)],
    Victim = slot_owner(binary_to_integer(mongoose_redis:cmd(["CLUSTER", "KEYSLOT", "kill:1"]))),
    Load = start_load(100, fun(I) -> q(["INCR", lists:nth(I, Keys)]) end),
    timer:sleep(500),
    Killed = erlang:monotonic_time(millisecond),
    kill9(cluster_pidfile(Victim)),
    wait_until(fun() -> lists:member(Victim, master_ports()) =:= false end, 200),
    Recovered = wait_calls_ok(fun() -> q(["INCR", "kill:1"]) end, 200),
    timer:sleep(1000),
    Report = stop_load(Load),
    ct:pal("kill -9 of master ~p under 100 callers: calls succeed again after ~p ms; ~p",
           [Victim, Recovered - Killed, Report]),
    ?assert(Recovered - Killed < 15000),
    ?assert(maps:get(slowest_ms, Report) < CallTimeout + 500),
    ?assert(maps:get(ok, Report) > 0).

%%--------------------------------------------------------------------
%% sentinel

sentinel_commands(_Config) ->
    {ok, _} = start_sentinel_pool(default, [], #{}),
    Master = sentinel_master(),
    ?assertEqual(<<"OK">>, mongoose_redis:cmd(["SET", "s", "1"])),
    ?assertEqual(<<"1">>, cli(Master, ["GET", "s"])),
    ?assertEqual([{ok, <<"2">>}, {ok, <<"2">>}], mongoose_redis:cmds([["INCR", "s"], ["GET", "s"]])),
    ?assertEqual([{ok, <<"OK">>}, {ok, <<"QUEUED">>}, {ok, [<<"3">>]}],
                 mongoose_redis:cmds([["MULTI"], ["INCR", "s"], ["EXEC"]])).

sentinel_reads_from_replicas(_Config) ->
    {ok, _} = start_sentinel_pool(default, [], #{read_from_replicas => true}),
    Master = sentinel_master(),
    [Replica] = [7100, 7101] -- [Master],
    <<"OK">> = mongoose_redis:cmd(["SET", "sr", "v"]),
    wait_replicated(Master),
    Before = get_calls([Master, Replica]),
    [?assertEqual(<<"v">>, mongoose_redis:cmd(["GET", "sr"])) || _ <- lists:seq(1, 100)],
    After = get_calls([Master, Replica]),
    ?assertEqual(100, maps:get(Replica, After) - maps:get(Replica, Before)),
    ?assertEqual(0, maps:get(Master, After) - maps:get(Master, Before)).

%% SENTINEL FAILOVER under load: afterwards the pool writes to the new master.
sentinel_failover_under_load(_Config) ->
    {ok, _} = start_sentinel_pool(default, [{workers, 4}, {call_timeout, 1000}], #{}),
    Old = sentinel_master(),
    Load = start_load(20, fun(_) -> q(["INCR", "sf"]) end),
    timer:sleep(300),
    "OK" = string:trim(cli_s(26400, ["SENTINEL", "FAILOVER", "mymaster"])),
    wait_until(fun() -> sentinel_master() =/= Old end, 200),
    New = sentinel_master(),
    %% Until the sentinels demote the old master it still takes writes
    %% (Redis's own window); then it answers READONLY and the pool asks the
    %% sentinels again.
    wait_until(fun() -> role(New) =:= <<"master">> andalso role(Old) =:= <<"slave">> end, 300),
    wait_calls_ok(fun() -> q(["SET", "after", "failover"]) end, 200),
    timer:sleep(500),
    Report = stop_load(Load),
    ct:pal("SENTINEL FAILOVER ~p -> ~p under 20 callers: ~p", [Old, New, Report]),
    %% Written to the new master, whatever the old one became.
    ?assertEqual(<<"failover">>, cli(New, ["GET", "after"])),
    ?assert(maps:get(slowest_ms, Report) < 1500),
    ?assert(maps:get(failing_window_ms, Report) < 15000),
    ?assert(maps:get(ok, Report) > 0).

%% kill -9 of the master under 100 callers: the sentinels promote the
%% replica and the pool follows.
sentinel_master_killed_under_load(_Config) ->
    {ok, _} = start_sentinel_pool(default, [{workers, 8}, {call_timeout, 1000}], #{}),
    Old = sentinel_master(),
    Load = start_load(100, fun(I) -> q(["INCR", "sk" ++ integer_to_list(I)]) end),
    timer:sleep(300),
    Killed = erlang:monotonic_time(millisecond),
    kill9(sentinel_pidfile(Old)),
    wait_until(fun() -> sentinel_master() =/= Old end, 300),
    Recovered = wait_calls_ok(fun() -> q(["INCR", "sk1"]) end, 200),
    timer:sleep(500),
    Report = stop_load(Load),
    ct:pal("kill -9 of sentinel master ~p: calls succeed again after ~p ms; ~p",
           [Old, Recovered - Killed, Report]),
    ?assert(Recovered - Killed < 20000),
    ?assert(maps:get(slowest_ms, Report) < 1500).

%%--------------------------------------------------------------------
%% helpers

q(Cmd) -> mongoose_wpool:call(redis, global, default, {q, Cmd}).

servers(Ports) -> [#{host => <<"127.0.0.1">>, port => P} || P <- Ports].

start_cluster_pool(Tag, PoolOpts, Extra) ->
    mongoose_wpool:start(redis, global, Tag, [{workers, 4} | PoolOpts],
                         maps:merge(#{mode => <<"cluster">>, servers => servers(?SEEDS)}, Extra)).

start_sentinel_pool(Tag, PoolOpts, Extra) ->
    mongoose_wpool:start(redis, global, Tag, [{workers, 4} | PoolOpts],
                         maps:merge(#{mode => <<"sentinel">>, servers => servers(?SENTINELS),
                                      master_name => ?MASTER_NAME}, Extra)).

root() ->
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:dirname(filename:dirname(Source)).

topologies() ->
    Out = os:cmd("bash " ++ filename:join([root(), "scripts", "redis_topologies.sh"]) ++ " 2>&1; echo rc=$?"),
    case string:find(Out, "rc=0") of
        nomatch -> ct:fail({redis_topologies, Out});
        _ -> ok
    end.

cli_s(Port, Args) ->
    os:cmd(lists:flatten(["redis-cli -h 127.0.0.1 -p ", integer_to_list(Port),
                          [[" '", A, "'"] || A <- Args], " 2>/dev/null"])).

cli(Port, Args) -> list_to_binary(string:trim(cli_s(Port, Args))).

%% {Port, Id, Role, MasterId, Slots} of every node, from CLUSTER NODES.
cluster_nodes() ->
    Lines = string:lexemes(cli_s(7000, ["CLUSTER", "NODES"]), "\n"),
    [begin
         [Id, Addr, Flags, MasterId, _, _, _, _ | Slots] = string:lexemes(L, " "),
         [_, PortS | _] = string:lexemes(Addr, ":@"),
         Role = case string:find(Flags, "master") of nomatch -> replica; _ -> master end,
         Down = string:find(Flags, "fail") =/= nomatch,
         {list_to_integer(PortS), Id, Role, MasterId, Slots, Down}
     end || L <- Lines].

master_ports() ->
    lists:sort([P || {P, _, master, _, [_ | _], false} <- cluster_nodes()]).

replicas_of(Port) ->
    Nodes = cluster_nodes(),
    [Id] = [I || {P, I, _, _, _, _} <- Nodes, P =:= Port],
    [P || {P, _, replica, M, _, false} <- Nodes, M =:= Id].

node_id(Port) -> string:trim(cli_s(Port, ["CLUSTER", "MYID"])).

slot_owner(Slot) ->
    Owners = [P || {P, _, master, _, Ranges, false} <- cluster_nodes(), in_ranges(Slot, Ranges)],
    case Owners of [P] -> P; _ -> none end.

in_ranges(Slot, Ranges) ->
    lists:any(fun(R) ->
                      case string:lexemes(R, "-") of
                          [A, B] -> Slot >= list_to_integer(A) andalso Slot =< list_to_integer(B);
                          [A] -> string:find(A, "[") =:= nomatch andalso Slot =:= list_to_integer(A)
                      end
              end, Ranges).

%% The documented resharding steps (Redis's CLUSTER SETSLOT page).
migrate_slot(Slot, From, To) ->
    S = integer_to_list(Slot),
    FromId = node_id(From), ToId = node_id(To),
    "OK" = string:trim(cli_s(To, ["CLUSTER", "SETSLOT", S, "IMPORTING", FromId])),
    "OK" = string:trim(cli_s(From, ["CLUSTER", "SETSLOT", S, "MIGRATING", ToId])),
    move_keys(Slot, From, To),
    [cli_s(P, ["CLUSTER", "SETSLOT", S, "NODE", ToId]) || P <- [To, From | master_ports()]],
    wait_until(fun() -> slot_owner(Slot) =:= To end, 100).

move_keys(Slot, From, To) ->
    Keys = string:lexemes(cli_s(From, ["CLUSTER", "GETKEYSINSLOT", integer_to_list(Slot), "10"]), "\n"),
    case Keys of
        [] -> ok;
        _ ->
            %% A few at a time, so callers meet both ASK and MOVED.
            _ = cli_s(From, ["MIGRATE", "127.0.0.1", integer_to_list(To), "", "0", "5000", "KEYS" | Keys]),
            timer:sleep(20),
            move_keys(Slot, From, To)
    end.

cluster_pidfile(Port) ->
    filename:join([root(), "_build", "redis", "cluster", integer_to_list(Port), "redis.pid"]).

sentinel_pidfile(Port) ->
    filename:join([root(), "_build", "redis", "sentinel", integer_to_list(Port), "redis.pid"]).

kill9(Pidfile) ->
    {ok, Pid} = file:read_file(Pidfile),
    [] = os:cmd("kill -9 " ++ string:trim(binary_to_list(Pid))),
    ok.

sentinel_master() ->
    [_, Port] = string:lexemes(cli_s(26400, ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]), "\n"),
    list_to_integer(string:trim(Port)).

role(Port) ->
    case string:lexemes(cli_s(Port, ["ROLE"]), "\n") of
        [Role | _] -> list_to_binary(Role);
        [] -> down
    end.

wait_replicated(Master) ->
    cli_s(Master, ["WAIT", "1", "2000"]).

%% calls=N of cmdstat_get on each port.
get_calls() -> get_calls(?CLUSTER_PORTS).
get_calls(Ports) ->
    maps:from_list(
      [{P, case re:run(cli_s(P, ["INFO", "commandstats"]), "cmdstat_get:calls=([0-9]+)",
                       [{capture, all_but_first, list}]) of
               {match, [N]} -> list_to_integer(N);
               nomatch -> 0
           end} || P <- Ports]).

wait_until(F, 0) -> ?assert(F());
wait_until(F, N) ->
    case catch F() of
        true -> ok;
        _ -> timer:sleep(100), wait_until(F, N - 1)
    end.

%% The time at which Call first succeeded.
wait_calls_ok(Call, 0) -> ct:fail({never_recovered, Call()});
wait_calls_ok(Call, N) ->
    case catch Call() of
        {ok, _} -> erlang:monotonic_time(millisecond);
        _ -> timer:sleep(50), wait_calls_ok(Call, N - 1)
    end.

%% N callers, each calling Fun(I) in a loop; stop_load/1 reports how many
%% calls succeeded and failed, the window in which they failed and the
%% slowest call.
start_load(N, Fun) ->
    Self = self(),
    [spawn_link(fun() -> caller(Fun, I, Self, #{ok => 0, failed => 0, slowest_ms => 0}) end)
     || I <- lists:seq(1, N)].

caller(Fun, I, Parent, Acc) ->
    receive stop -> Parent ! {load, Acc}
    after 0 ->
        T0 = erlang:monotonic_time(millisecond),
        %% A call past call_timeout exits, as wpool's does.
        R = catch Fun(I),
        T1 = erlang:monotonic_time(millisecond),
        Acc1 = Acc#{slowest_ms := max(T1 - T0, maps:get(slowest_ms, Acc))},
        Acc2 = case R of
                   {ok, _} -> maps:update_with(ok, fun(X) -> X + 1 end, Acc1);
                   _ -> Failed = maps:update_with(failed, fun(X) -> X + 1 end, Acc1),
                        Failed#{first_failure => min(T0, maps:get(first_failure, Failed, T0)),
                                last_failure => max(T1, maps:get(last_failure, Failed, T1)),
                                an_error => R}
               end,
        caller(Fun, I, Parent, Acc2)
    end.

stop_load(Pids) ->
    [P ! stop || P <- Pids],
    Reports = [receive {load, R} -> R after 10000 -> ct:fail(caller_stuck) end || _ <- Pids],
    Sum = fun(K) -> lists:sum([maps:get(K, R) || R <- Reports]) end,
    Firsts = [F || #{first_failure := F} <- Reports],
    Lasts = [L || #{last_failure := L} <- Reports],
    Window = case Firsts of [] -> 0; _ -> lists:max(Lasts) - lists:min(Firsts) end,
    Errors = lists:usort([E || #{an_error := E} <- Reports]),
    #{ok => Sum(ok), failed => Sum(failed), failing_window_ms => Window,
      slowest_ms => lists:max([maps:get(slowest_ms, R) || R <- Reports]),
      errors => lists:sublist(Errors, 3)}.
