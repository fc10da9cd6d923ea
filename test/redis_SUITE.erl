%% The redis pool type and mongoose_redis against real Redis servers: the
%% shared one on 6379 and private ones this suite starts and kills.
-module(redis_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(PRIVATE_PORT, 16479).
-define(AUTH_PORT, 16480).
-define(TLS_PORT, 16481).

all() ->
    [request_forms, result_shapes, pipeline, allowed_strategies, mongoose_redis_api,
     send_request_and_cast, database_option, auth_failure, unreachable_server,
     bad_requests, connection_state_commands_are_refused, transaction_is_atomic_and_isolated,
     missing_password_fails_start, idle_connection_closed_by_server, tls, restart_mid_load,
     killed_with_requests_in_flight, stopped_server_fills_no_scheduler, nif_calls_do_not_block].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_, Config) ->
    {ok, _} = mongoose_wpool:start(redis, global, default, [{workers, 4}], #{database => 5}),
    q([<<"FLUSHDB">>]),
    Config.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    mn_test_redis:stop(?PRIVATE_PORT),
    mn_test_redis:stop(?AUTH_PORT),
    mn_test_redis:stop(?TLS_PORT),
    ok.

q(Cmd) -> mongoose_wpool:call(redis, global, default, {q, Cmd}).

%%--------------------------------------------------------------------

request_forms(_Config) ->
    %% Binaries, charlists, atoms, integers and nested iolists are all arguments.
    ?assertEqual({ok, <<"OK">>}, q(["SET", <<"k1">>, 42])),
    ?assertEqual({ok, <<"42">>}, q([<<"GET">>, k1])),
    ?assertEqual({ok, <<"OK">>}, q(['SET', ["k", [<<"2">>]], [<<"a">>, "b", [$c]]])),
    ?assertEqual({ok, <<"abc">>}, q(["GET", "k2"])),
    Bytes = <<0, 255, 10, 13, "binary">>,
    ?assertEqual({ok, <<"OK">>}, q(["SET", "k3", Bytes])),
    ?assertEqual({ok, Bytes}, q(["GET", "k3"])).

result_shapes(_Config) ->
    ?assertEqual({ok, undefined}, q(["GET", "missing"])),
    ?assertEqual({ok, <<"1">>}, q(["INCR", "counter"])),
    ?assertEqual({ok, <<"3">>}, q(["RPUSH", "list", "a", "b", "c"])),
    ?assertEqual({ok, [<<"a">>, <<"b">>, <<"c">>]}, q(["LRANGE", "list", 0, -1])),
    ?assertEqual({ok, []}, q(["LRANGE", "nolist", 0, -1])),
    {ok, <<"OK">>} = q(["SET", "mk", "a"]),
    ?assertEqual({ok, [<<"a">>, undefined]}, q(["MGET", "mk", "nope"])),
    ?assertEqual({ok, <<"PONG">>}, q(["PING"])),
    {error, Wrong} = q(["INCR", "list"]),
    ?assertMatch(<<"WRONGTYPE", _/binary>>, Wrong),
    {error, Unknown} = q(["NOSUCHCOMMAND"]),
    ?assertMatch(<<"ERR unknown command", _/binary>>, Unknown).

pipeline(_Config) ->
    Results = mongoose_wpool:call(redis, global, default,
                                  {qp, [["SET", "p", "1"], ["INCR", "p"], ["LPUSH", "p", "x"],
                                        ["GET", "p"]]}),
    ?assertMatch([{ok, <<"OK">>}, {ok, <<"2">>}, {error, <<"WRONGTYPE", _/binary>>}, {ok, <<"2">>}],
                 Results).

allowed_strategies(_Config) ->
    [begin
         Tag = list_to_atom("s_" ++ atom_to_list(S)),
         {ok, _} = mongoose_wpool:start(redis, global, Tag, [{workers, 2}, {strategy, S}], #{}),
         ?assertEqual({ok, <<"PONG">>}, mongoose_wpool:call(redis, global, Tag, {q, ["PING"]}))
     end || S <- [best_worker, random_worker, next_worker, next_available_worker]],
    ?assertError({strategy_not_supported, redis, global, avail, available_worker},
                 mongoose_wpool:start(redis, global, avail, [{strategy, available_worker}], #{})).

mongoose_redis_api(_Config) ->
    ?assertEqual(<<"OK">>, mongoose_redis:cmd(["SET", "mr", "v"])),
    ?assertEqual(<<"v">>, mongoose_redis:cmd(["GET", "mr"])),
    ?assertEqual(undefined, mongoose_redis:cmd(["GET", "nothing"], 1000)),
    ?assertMatch({error, <<"ERR", _/binary>>}, mongoose_redis:cmd(["BOGUS"])),
    ?assertEqual([{ok, <<"1">>}, {ok, [<<"a">>]}],
                 mongoose_redis:cmds([["SADD", "set", "a"], ["SMEMBERS", "set"]])),
    ?assertEqual([{ok, <<"0">>}], mongoose_redis:cmds([["SADD", "set", "a"]], 1000)).

send_request_and_cast(_Config) ->
    ok = mongoose_wpool:cast(redis, global, default, {q, ["SET", "c", "casted"]}),
    timer:sleep(100),
    ReqId = mongoose_wpool:send_request(redis, global, default, {q, ["GET", "c"]}),
    ?assertEqual({reply, {ok, <<"casted">>}}, gen_server:receive_response(ReqId, 1000)).

database_option(_Config) ->
    {ok, _} = mongoose_wpool:start(redis, global, db6, [], #{database => 6}),
    {ok, <<"OK">>} = mongoose_wpool:call(redis, global, db6, {q, ["SET", "where", "six"]}),
    ?assertEqual({ok, undefined}, q(["GET", "where"])),
    {ok, _} = mongoose_wpool:call(redis, global, db6, {q, ["FLUSHDB"]}).

auth_failure(_Config) ->
    ok = mn_test_redis:start(?AUTH_PORT, ["--requirepass", "correct-horse"]),
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(redis, global, auth, [{workers, 1}],
                             #{port => ?AUTH_PORT, password => "battery-staple"}),
    ?assertEqual(nomatch, binary:match(Msg, <<"battery-staple">>)),
    ?assertNotEqual(nomatch, binary:match(string:lowercase(Msg), <<"pass">>)),
    {ok, _} = mongoose_wpool:start(redis, global, auth, [{workers, 1}],
                                   #{port => ?AUTH_PORT, password => <<"correct-horse">>}),
    ?assertEqual({ok, <<"PONG">>}, mongoose_wpool:call(redis, global, auth, {q, ["PING"]})),
    {error, {connect_failed, DbMsg}} =
        mongoose_wpool:start(redis, global, baddb, [{workers, 1}],
                             #{port => ?AUTH_PORT, password => "correct-horse", database => 999}),
    ?assertNotEqual(nomatch, binary:match(DbMsg, <<"DB index">>)).

unreachable_server(_Config) ->
    T0 = erlang:monotonic_time(millisecond),
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(redis, global, down, [{workers, 2}], #{port => 1}),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 2000),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"127.0.0.1:1">>)),
    ?assertEqual([{redis, global, default}], mongoose_wpool:get_pools()).

bad_requests(_Config) ->
    ?assertMatch({error, {bad_request, _}}, mongoose_wpool:call(redis, global, default, get)),
    ?assertMatch({error, {bad_request, _}}, mongoose_wpool:call(redis, global, default, {q, []})),
    ?assertMatch({error, {bad_request, _}},
                 mongoose_wpool:call(redis, global, default, {q, ["SET", self(), 1]})),
    ?assertMatch({error, {bad_request, _}},
                 mongoose_wpool:call(redis, global, default, {q, ["SET", {a, b}, 1]})),
    ?assertEqual({ok, <<"PONG">>}, q(["PING"])).

%% Callers share connections (their commands pipeline), so commands that
%% change a connection's state would change it for everyone.
connection_state_commands_are_refused(_Config) ->
    Refused = [["MULTI"], ["EXEC"], ["DISCARD"], ["WATCH", "k"], [<<"select">>, 3],
               ["SUBSCRIBE", "ch"], ["psubscribe", "c*"], ["MONITOR"], ["QUIT"], ["RESET"],
               ["CLIENT", "REPLY", "OFF"], ["client", "tracking", "on"], ["HELLO", 3],
               ["BLPOP", "empty", 0], ["BRPOP", "empty", "10"], ["BLMPOP", 0, 1, "l", "LEFT"],
               ["XREAD", "BLOCK", 0, "STREAMS", "s", "$"], ["WAIT", 1, 0]],
    [?assertMatch({{error, {bad_request, _}}, _}, {q(C), C}) || C <- Refused],
    ?assertMatch([{ok, _}, {error, {bad_request, _}}],
                 [q(["PING"]),
                  mongoose_wpool:call(redis, global, default, {qp, [["PING"], ["SELECT", 1]]})]),
    %% A blocking pop that gives up before call_timeout is fine.
    ?assertEqual({ok, undefined}, q(["BLPOP", "empty", "0.1"])),
    ?assertEqual({ok, <<"OK">>}, q(["CLIENT", "SETNAME", "x"])),
    ?assertEqual({ok, undefined}, q(["GET", "k"])).

%% MULTI ... EXEC sent as one qp reaches the server in one piece: its result
%% is the transaction's, and callers reading on the same connections never
%% see a QUEUED answer or a half-done transaction.
transaction_is_atomic_and_isolated(_Config) ->
    {ok, <<"OK">>} = q(["MSET", "a", "0", "b", "0"]),
    Self = self(),
    Readers = [spawn_link(fun() -> read_pairs(Self, 0) end) || _ <- lists:seq(1, 8)],
    Tx = [["MULTI"], ["INCR", "a"], ["INCR", "b"], ["EXEC"]],
    Results = [mongoose_wpool:call(redis, global, default, {qp, Tx}) || _ <- lists:seq(1, 300)],
    [R ! stop || R <- Readers],
    Reads = [receive {reads, R, N} -> N after 5000 -> ct:fail(reader_stuck) end || R <- Readers],
    [?assertMatch([{ok, <<"OK">>}, {ok, <<"QUEUED">>}, {ok, <<"QUEUED">>}, {ok, [N, N]}], R)
     || R <- Results],
    ?assertEqual({ok, [<<"300">>, <<"300">>]}, lists:last(lists:last(Results))),
    ?assert(lists:sum(Reads) > 0),
    ?assertEqual({ok, [<<"300">>, <<"300">>]}, q(["MGET", "a", "b"])).

%% Each read sees both counters equal: never QUEUED, never between the INCRs.
read_pairs(Parent, N) ->
    receive stop -> Parent ! {reads, self(), N}
    after 0 ->
        {ok, [A, A]} = q(["MGET", "a", "b"]),
        true = is_binary(A),
        read_pairs(Parent, N + 1)
    end.

missing_password_fails_start(_Config) ->
    ok = mn_test_redis:start(?AUTH_PORT, ["--requirepass", "correct-horse"]),
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(redis, global, nopass, [{workers, 1}], #{port => ?AUTH_PORT}),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"requires a password">>)),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"connection.password">>)),
    {error, {connect_failed, Wrong}} =
        mongoose_wpool:start(redis, global, wrongpass, [{workers, 1}],
                             #{port => ?AUTH_PORT, password => "battery-staple"}),
    ?assertNotEqual(nomatch, binary:match(Wrong, <<"connection.password">>)),
    ?assertEqual(nomatch, binary:match(Wrong, <<"battery-staple">>)),
    ?assertEqual([{redis, global, default}], mongoose_wpool:get_pools()).

%% A connection the server closes while idle is noticed and replaced before
%% any call finds out; with the server gone, stats/3 says so at once.
idle_connection_closed_by_server(_Config) ->
    ok = mn_test_redis:start(?PRIVATE_PORT, []),
    {ok, _} = mongoose_wpool:start(redis, global, idle, [{workers, 2}], #{port => ?PRIVATE_PORT}),
    Before = client_ids(),
    ?assertEqual(2, length(Before)),
    _ = os:cmd("redis-cli -p " ++ integer_to_list(?PRIVATE_PORT)
               ++ " CLIENT KILL TYPE normal SKIPME yes"),
    After = wait_for(fun() -> case client_ids() of
                                  Ids when length(Ids) =:= 2 -> {ok, Ids};
                                  _ -> retry
                              end
                     end, 50),
    ?assertEqual([], After -- (After -- Before)),
    ?assertEqual([true, true], connected(idle)),
    ?assertEqual({ok, <<"PONG">>}, mongoose_wpool:call(redis, global, idle, {q, ["PING"]})),
    ok = mn_test_redis:stop(?PRIVATE_PORT),
    wait_for(fun() -> case connected(idle) of [false, false] -> {ok, done}; _ -> retry end end, 50).

client_ids() ->
    Out = os:cmd("redis-cli -p " ++ integer_to_list(?PRIVATE_PORT) ++ " CLIENT LIST"),
    [Id || Line <- string:split(Out, "\n", all), "id=" ++ Rest <- [Line],
           string:find(Line, "cmd=client") =:= nomatch,
           [Id | _] <- [string:split(Rest, " ")]].

connected(Tag) ->
    Workers = proplists:get_value(workers, mongoose_wpool:stats(redis, global, Tag)),
    [proplists:get_value(connected, W) || {_, W} <- Workers].

wait_for(F, 0) -> ct:fail({condition_not_met, F()});
wait_for(F, N) ->
    case F() of
        {ok, V} -> V;
        retry -> timer:sleep(100), wait_for(F, N - 1)
    end.

%% A TLS-only redis-server: the tls section goes through the shared TLS
%% module; verify_peer against the right CA works, the wrong CA is refused.
tls(Config) ->
    Certs = mn_test_certs:make(?config(priv_dir, Config)),
    C = fun(Name) -> maps:get(Name, Certs) end,
    ok = mn_test_redis:start(?TLS_PORT, ["--port", "0", "--tls-port", integer_to_list(?TLS_PORT),
                                         "--tls-cert-file", C(server), "--tls-key-file", C(server_key),
                                         "--tls-ca-cert-file", C(ca), "--tls-auth-clients", "no"]),
    {ok, _} = mongoose_wpool:start(redis, global, tls, [{workers, 2}],
                                   #{port => ?TLS_PORT,
                                     tls => #{verify_peer => true, cacertfile => C(ca)}}),
    ?assertEqual({ok, <<"OK">>}, mongoose_wpool:call(redis, global, tls, {q, ["SET", "t", "s"]})),
    ?assertEqual({ok, <<"s">>}, mongoose_wpool:call(redis, global, tls, {q, ["GET", "t"]})),
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(redis, global, wrong_ca, [{workers, 1}],
                             #{port => ?TLS_PORT,
                               tls => #{verify_peer => true, cacertfile => C(other_ca)}}),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"TLS handshake">>)),
    %% Plain TCP to a TLS port: an error at start, not a hang.
    ?assertMatch({error, {connect_failed, _}},
                 mongoose_wpool:start(redis, global, plain, [{workers, 1}],
                                      #{port => ?TLS_PORT})).

%% Kill the server under load: calls fail fast with an error while it is
%% down, and the pool serves again by itself once it is back.
restart_mid_load(_Config) ->
    ok = mn_test_redis:start(?PRIVATE_PORT, []),
    {ok, _} = mongoose_wpool:start(redis, global, restart, [{workers, 3}, {call_timeout, 1000}],
                                   #{port => ?PRIVATE_PORT}),
    Call = fun() -> mongoose_wpool:call(redis, global, restart, {q, ["INCR", "n"]}) end,
    Self = self(),
    Loader = spawn_link(fun() -> load(Call, Self, #{ok => 0, error => 0}) end),
    timer:sleep(300),
    ok = mn_test_redis:stop(?PRIVATE_PORT),
    timer:sleep(500),
    %% While the server is down: an error, and quickly.
    T0 = erlang:monotonic_time(millisecond),
    ?assertMatch({error, _}, Call()),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 500),
    ok = mn_test_redis:start(?PRIVATE_PORT, []),
    wait_ok(Call, 60),
    Loader ! stop,
    Counts = receive {counts, C} -> C after 5000 -> ct:fail(loader_stuck) end,
    ct:pal("calls during the restart: ~p", [Counts]),
    ?assert(maps:get(ok, Counts) > 0),
    ?assert(maps:get(error, Counts) > 0).

%% Requests waiting for their replies, the first written by its caller's
%% own thread (the pool was idle) and the others by their workers, get an
%% error as soon as the server is gone, not at their timeout; the pool then
%% reconnects by itself.
killed_with_requests_in_flight(_Config) ->
    ok = mn_test_redis:start(?PRIVATE_PORT, []),
    {ok, _} = mongoose_wpool:start(redis, global, killed, [{workers, 4}, {call_timeout, 5000}],
                                   #{port => ?PRIVATE_PORT}),
    Call = fun(Cmd) -> mongoose_wpool:call(redis, global, killed, {q, Cmd}) end,
    Self = self(),
    Waiting = [spawn_link(fun() ->
                                  T0 = erlang:monotonic_time(millisecond),
                                  R = Call(["BLPOP", "empty" ++ integer_to_list(I), "4"]),
                                  Self ! {answered, R, erlang:monotonic_time(millisecond) - T0}
                          end) || I <- lists:seq(1, 4)],
    timer:sleep(300),
    ?assertEqual(4, proplists:get_value(total_in_flight, mongoose_wpool:stats(redis, global, killed))),
    ok = mn_test_redis:stop(?PRIVATE_PORT),
    Answers = [receive {answered, R, Ms} -> {R, Ms} after 3000 -> ct:fail(caller_stuck) end
               || _ <- Waiting],
    [?assertMatch({{error, {connection_lost, _}}, Ms} when Ms < 2000, A) || A <- Answers],
    ?assertEqual(0, proplists:get_value(total_in_flight, mongoose_wpool:stats(redis, global, killed))),
    ok = mn_test_redis:start(?PRIVATE_PORT, []),
    wait_ok(fun() -> Call(["INCR", "n"]) end, 60),
    ?assertEqual({ok, <<"2">>}, Call(["INCR", "n"])).

%% A stopped server stops reading: commands fill the socket and then wait
%% in the connection's buffer for the writer task. No caller's scheduler
%% waits for the socket meanwhile, the callers time out, and once
%% the server reads again every command reaches it, in order.
stopped_server_fills_no_scheduler(_Config) ->
    ok = mn_test_redis:start(?PRIVATE_PORT, []),
    {ok, _} = mongoose_wpool:start(redis, global, stopped, [{workers, 2}, {call_timeout, 1000}],
                                   #{port => ?PRIVATE_PORT}),
    Call = fun(Cmd) -> mongoose_wpool:call(redis, global, stopped, {q, Cmd}) end,
    ok = mn_test_redis:signal(?PRIVATE_PORT, "STOP"),
    Value = binary:copy(<<"v">>, 200000),
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {set, catch Call(["RPUSH", "big", Value])} end)
               || _ <- lists:seq(1, 60)],
    Probe = mn_test_probe:start(),
    timer:sleep(400),
    {P99, Max, Count} = mn_test_probe:stop(Probe),
    Results = [receive {set, R} -> R after 5000 -> ct:fail(caller_stuck) end || _ <- Callers],
    ?assertEqual(60, length([timeout || {'EXIT', {timeout, _}} <- Results])),
    ok = mn_test_redis:signal(?PRIVATE_PORT, "CONT"),
    ?assert(Count >= 100, {wake_ups, Count}),
    ?assert(P99 < 25000 andalso Max < 250000, {p99, P99, max, Max}),
    %% 12 MB went out after the server woke up, all of it.
    wait_ok(fun() -> case Call(["LLEN", "big"]) of
                         {ok, <<"60">>} -> {ok, 60};
                         _ -> not_yet
                     end
            end, 100),
    ?assertEqual({ok, <<"61">>}, Call(["RPUSH", "big", "last"])).

load(Call, Parent, Counts) ->
    receive stop -> Parent ! {counts, Counts}
    after 0 ->
        Key = case Call() of {ok, _} -> ok; _ -> error end,
        load(Call, Parent, maps:update_with(Key, fun(N) -> N + 1 end, Counts))
    end.

wait_ok(Call, 0) -> ?assertMatch({ok, _}, Call());
wait_ok(Call, N) ->
    case Call() of
        {ok, _} -> ok;
        _ -> timer:sleep(100), wait_ok(Call, N - 1)
    end.

%% 1,000 requests wait inside the NIF (BLPOP on empty lists: each blocks its
%% connection for a second, so the pool gets a connection per request) while
%% an unrelated process's 2 ms wake-ups stay on time.
nif_calls_do_not_block(_Config) ->
    {ok, _} = mongoose_wpool:start(redis, global, blocking,
                                   [{workers, 1000}, {strategy, next_worker}, {call_timeout, 5000}],
                                   #{database => 5}),
    Self = self(),
    Callers = [spawn_link(fun() ->
                                  R = mongoose_wpool:call(redis, global, blocking,
                                                          {q, ["BLPOP", "empty" ++ integer_to_list(I), 1]}),
                                  Self ! {done, R}
                          end) || I <- lists:seq(1, 1000)],
    Probe = mn_test_probe:start(),
    timer:sleep(400),
    {P99, Max, Count} = mn_test_probe:stop(Probe),
    %% The probe measured while every request was still waiting in the NIF.
    receive {done, Early} -> ct:fail({answered_before_the_probe_ended, Early}) after 0 -> ok end,
    ?assert(Count >= 100, {wake_ups, Count}),
    Results = [receive {done, R} -> R after 10000 -> ct:fail(caller_stuck) end || _ <- Callers],
    ct:pal("scheduling lateness while 1000 requests waited (~p wake-ups): p99 ~p us, max ~p us",
           [Count, P99, Max]),
    ?assertEqual(1000, length([ok || {ok, undefined} <- Results])),
    %% A NIF waiting on one of those BLPOPs would make a wake-up a second
    %% late. The machine's own noise: p99 1-2 ms when quiet, 3-5 ms beside
    %% two CPU hogs on this project's 2-vCPU machines, and once above 5 ms
    %% in CI; the bounds sit well above that and well below the defect.
    ?assert(P99 < 25000 andalso Max < 250000, {p99, P99, max, Max}).
