%% The pool engine through mongoose_wpool and the NIF: lifecycle, every
%% strategy, timeouts, bounded queues, stats and the three config inputs.
%% Generic pools run their MFAs in Erlang executors, so they exercise the
%% engine without any server.
-module(wpool_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

all() ->
    [lifecycle, unknown_pool, strategy_restrictions, next_worker_round_robin,
     best_worker_prefers_idle, random_worker_runs, hash_worker_is_sticky,
     available_worker_waits, available_worker_times_out, next_available_worker_fails_fast,
     max_worker_queue_len_bounds_queue, timeout_leaves_mailbox_empty, exceptions_reach_caller,
     cast_and_send_request, stream_on_a_one_part_pool_is_refused, stats_count_in_flight, map_config_expansion,
     legacy_tuple_example, toml_file_config, bad_configs_are_named, executor_restart,
     every_example_file_is_valid].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    Config.

end_per_suite(_Config) ->
    ok.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    ok.

start_generic(Tag, Opts) ->
    {ok, _} = mongoose_wpool:start(generic, global, Tag, Opts),
    ok.

call(Tag, MFA) ->
    mongoose_wpool:call(generic, global, Tag, MFA).

%% Spawns N callers of MFA at once; returns their results in order.
parallel(N, F) ->
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), catch F(I)} end) || I <- lists:seq(1, N)],
    [receive {P, R} -> R after 10000 -> error(parallel_timeout) end || P <- Pids].

%%--------------------------------------------------------------------

lifecycle(_Config) ->
    start_generic(life, [{workers, 2}]),
    ?assertEqual({error, {already_started, {generic, global, life}}},
                 mongoose_wpool:start(generic, global, life, [])),
    ?assertEqual([{generic, global, life}], mongoose_wpool:get_pools()),
    ?assertEqual({mongoose_wpool, {generic, global, life}, 'mongoose_wpool$generic$global$life',
                  best_worker, 5000},
                 mongoose_wpool:get_pool_settings(generic, global, life)),
    %% A host type without its own pool falls back to the global one.
    ?assertEqual(3, mongoose_wpool:call(generic, <<"a.com">>, life, {erlang, '+', [1, 2]})),
    ?assertEqual('mongoose_wpool$rdbms$a.com$default',
                 mongoose_wpool:make_pool_name(rdbms, <<"a.com">>, default)),
    ok = mongoose_wpool:stop(generic, global, life),
    ?assertEqual([], mongoose_wpool:get_pools()),
    ?assertEqual(undefined, mongoose_wpool:get_pool_settings(generic, global, life)).

unknown_pool(_Config) ->
    ?assertEqual({error, {pool_not_started, {generic, global, nope}}},
                 mongoose_wpool:call(generic, global, nope, {erlang, node, []})),
    ?assertEqual({error, {pool_not_started, {redis, global, nope}}},
                 mongoose_wpool:cast(redis, global, nope, {q, [<<"PING">>]})).

strategy_restrictions(_Config) ->
    ?assertError({strategy_not_supported, redis, global, default, available_worker},
                 mongoose_wpool:start(redis, global, default, [{strategy, available_worker}])).

next_worker_round_robin(_Config) ->
    start_generic(rr, [{workers, 3}, {strategy, next_worker}]),
    Pids = [call(rr, {erlang, self, []}) || _ <- lists:seq(1, 6)],
    [A, B, C, A, B, C] = Pids,
    ?assertEqual(3, length(lists:usort([A, B, C]))).

best_worker_prefers_idle(_Config) ->
    start_generic(best, [{workers, 2}]),
    Self = self(),
    %% One worker is kept busy and tells which it is; every call meanwhile
    %% must go to the other one, without waiting for the busy one.
    Busy = fun() -> Self ! {busy, self()}, timer:sleep(1000) end,
    ok = mongoose_wpool:cast(generic, global, best, {erlang, apply, [Busy, []]}),
    BusyPid = receive {busy, P} -> P after 1000 -> ct:fail(busy_call_not_run) end,
    T0 = erlang:monotonic_time(millisecond),
    Picked = lists:usort([call(best, {erlang, self, []}) || _ <- lists:seq(1, 5)]),
    ?assertMatch([Idle] when Idle =/= BusyPid, Picked),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 500).

random_worker_runs(_Config) ->
    start_generic(rnd, [{workers, 4}, {strategy, random_worker}]),
    Pids = lists:usort([call(rnd, {erlang, self, []}) || _ <- lists:seq(1, 100)]),
    ?assert(length(Pids) > 1).

hash_worker_is_sticky(_Config) ->
    start_generic(hash, [{workers, 4}]),
    Of = fun(Key) -> mongoose_wpool:call(generic, global, hash, Key, {erlang, self, []}) end,
    ?assertEqual(Of(<<"alice">>), Of(<<"alice">>)),
    Spread = lists:usort([Of(K) || K <- lists:seq(1, 50)]),
    ?assertEqual(4, length(Spread)).

available_worker_waits(_Config) ->
    start_generic(avail, [{workers, 1}, {strategy, available_worker}, {call_timeout, 2000}]),
    T0 = erlang:monotonic_time(millisecond),
    [ok, done] = parallel(2, fun(1) -> call(avail, {timer, sleep, [300]});
                                (2) -> timer:sleep(50), call(avail, {erlang, list_to_atom, ["done"]})
                             end),
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 300).

available_worker_times_out(_Config) ->
    start_generic(avail_to, [{workers, 1}, {strategy, available_worker}, {call_timeout, 200}]),
    ok = mongoose_wpool:cast(generic, global, avail_to, {timer, sleep, [600]}),
    timer:sleep(50),
    T0 = erlang:monotonic_time(millisecond),
    ?assertExit({timeout, _}, call(avail_to, {erlang, node, []})),
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 200),
    receive Late -> ct:fail({late_reply, Late}) after 600 -> ok end,
    ?assertEqual(node(), call(avail_to, {erlang, node, []})).

next_available_worker_fails_fast(_Config) ->
    start_generic(nav, [{workers, 2}, {strategy, next_available_worker}]),
    Self = self(),
    [spawn(fun() -> Self ! {started, call(nav, {timer, sleep, [400]})} end) || _ <- [1, 2]],
    timer:sleep(100),
    T0 = erlang:monotonic_time(millisecond),
    ?assertExit(no_available_workers, call(nav, {erlang, node, []})),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 50),
    [receive {started, ok} -> ok end || _ <- [1, 2]],
    ?assertEqual(node(), call(nav, {erlang, node, []})).

max_worker_queue_len_bounds_queue(_Config) ->
    start_generic(bounded, [{workers, 1}, {max_worker_queue_len, 3}]),
    [ok = mongoose_wpool:cast(generic, global, bounded, {timer, sleep, [300]}) || _ <- [1, 2, 3]],
    %% Past the bound calls and casts alike exit as MongooseIM's do.
    ?assertExit(no_available_workers, call(bounded, {erlang, node, []})),
    ?assertExit(no_available_workers, mongoose_wpool:cast(generic, global, bounded, {erlang, node, []})),
    timer:sleep(1000),
    ?assertEqual(node(), call(bounded, {erlang, node, []})).

timeout_leaves_mailbox_empty(_Config) ->
    start_generic(slow, [{workers, 2}, {call_timeout, 100}]),
    ?assertExit({timeout, _}, call(slow, {timer, sleep, [400]})),
    receive Late -> ct:fail({late_reply, Late}) after 700 -> ok end,
    %% The pool still answers afterwards.
    ?assertEqual(node(), call(slow, {erlang, node, []})).

exceptions_reach_caller(_Config) ->
    start_generic(crash, [{workers, 1}]),
    ?assertError(boom, call(crash, {erlang, error, [boom]})),
    ?assertExit(bye, call(crash, {erlang, exit, [bye]})),
    ?assertThrow(ball, call(crash, {erlang, throw, [ball]})),
    %% The executor survived all three.
    ?assertEqual(node(), call(crash, {erlang, node, []})).

cast_and_send_request(_Config) ->
    start_generic(async, [{workers, 2}]),
    Self = self(),
    ok = mongoose_wpool:cast(generic, global, async, {erlang, send, [Self, casted]}),
    receive casted -> ok after 1000 -> ct:fail(no_cast) end,
    ReqId = mongoose_wpool:send_request(generic, global, async, {erlang, '*', [6, 7]}),
    {reply, {ok, 42}} = gen_server:receive_response(ReqId, 1000),
    ReqId2 = mongoose_wpool:send_request(generic, global, async, {erlang, node, []}),
    {reply, {ok, _}} = gen_server:wait_response(ReqId2, 1000).

stats_count_in_flight(_Config) ->
    start_generic(st, [{workers, 2}]),
    [mongoose_wpool:cast(generic, global, st, {timer, sleep, [300]}) || _ <- [1, 2, 3]],
    timer:sleep(50),
    Stats = mongoose_wpool:stats(generic, global, st),
    ?assertEqual('mongoose_wpool$generic$global$st', proplists:get_value(pool, Stats)),
    ?assertEqual(2, proplists:get_value(size, Stats)),
    ?assertEqual(2, proplists:get_value(total_in_flight, Stats)),
    ?assertEqual(1, proplists:get_value(total_message_queue_len, Stats)),
    timer:sleep(700),
    ?assertEqual(0, proplists:get_value(total_in_flight, mongoose_wpool:stats(generic, global, st))).

map_config_expansion(_Config) ->
    Pools = [#{type => generic, scope => host_type, tag => exp, opts => #{workers => 1},
               conn_opts => #{}},
             #{type => generic, scope => global, tag => glob, opts => #{}, conn_opts => #{}}],
    Specific = [#{type => generic, scope => <<"b.com">>, tag => exp, opts => #{workers => 3},
                  conn_opts => #{}}],
    Results = mongoose_wpool:start_configured_pools(Pools, Specific, [<<"a.com">>, <<"b.com">>]),
    ?assertMatch([{ok, _}, {ok, _}, {ok, _}], Results),
    ?assertEqual(lists:sort([{generic, <<"a.com">>, exp}, {generic, <<"b.com">>, exp},
                             {generic, global, glob}]),
                 lists:sort(mongoose_wpool:get_pools())),
    ?assertEqual(3, proplists:get_value(size, mongoose_wpool:stats(generic, <<"b.com">>, exp))),
    ?assertEqual(1, proplists:get_value(size, mongoose_wpool:stats(generic, <<"a.com">>, exp))).

%% Seed 000's worked example: a.com and c.eu have their own pools, the
%% `host' entry fills in b.com and d.eu.
legacy_tuple_example(_Config) ->
    Hosts = [<<"a.com">>, <<"b.com">>, <<"c.eu">>, <<"d.eu">>],
    In = [{generic, <<"a.com">>, default, [{workers, 1}], []},
          {generic, host, default, [{workers, 2}], []},
          {generic, <<"c.eu">>, default, [{workers, 3}], []}],
    Results = mongoose_wpool:start_configured_pools(In, Hosts),
    ?assertEqual(4, length([ok || {ok, _} <- Results])),
    Sizes = [{H, proplists:get_value(size, mongoose_wpool:stats(generic, H, default))} || H <- Hosts],
    ?assertEqual([{<<"a.com">>, 1}, {<<"b.com">>, 2}, {<<"c.eu">>, 3}, {<<"d.eu">>, 2}], Sizes).

toml_file_config(Config) ->
    File = filename:join(?config(priv_dir, Config), "pools.toml"),
    ok = file:write_file(File, <<"
[outgoing_pools.generic.toml_pool]
  scope = \"global\"
  workers = 2
  strategy = \"next_worker\"
  call_timeout = 1500

[outgoing_pools.generic.per_host]
  scope = \"host\"
">>),
    {ok, Pools} = mongoose_native_config:pools_from_toml(File),
    Results = mongoose_wpool:start_configured_pools(Pools, [<<"x.org">>]),
    ?assertMatch([{ok, _}, {ok, _}], Results),
    ?assertEqual({mongoose_wpool, {generic, global, toml_pool}, 'mongoose_wpool$generic$global$toml_pool',
                  next_worker, 1500},
                 mongoose_wpool:get_pool_settings(generic, global, toml_pool)),
    ?assertEqual(node(), mongoose_wpool:call(generic, <<"x.org">>, per_host, {erlang, node, []})).

bad_configs_are_named(Config) ->
    ?assertEqual({error, {invalid_config,
                          <<"outgoing_pools.generic.bad.workers: expected an integer between 1 and 100000, got -1">>}},
                 mongoose_wpool:start(generic, global, bad, [{workers, -1}])),
    ?assertEqual({error, {invalid_config,
                          <<"outgoing_pools.generic.bad.call_timeout: expected an integer between 1 and 4294967295, got \"soon\"">>}},
                 mongoose_wpool:start(generic, global, bad, [{call_timeout, "soon"}])),
    {error, {invalid_config, Unknown}} = mongoose_wpool:start(generic, global, bad, [{wrkers, 3}]),
    ?assertMatch({match, _}, re:run(Unknown, "outgoing_pools.generic.bad.wrkers: unknown option")),
    {error, {invalid_config, Port}} =
        mongoose_wpool:start(redis, global, bad, [], #{port => <<"6379">>}),
    ?assertEqual(<<"outgoing_pools.redis.bad.connection.port: expected an integer between 1 and 65534, got <<\"6379\">>">>, Port),
    {error, {invalid_config, Secret}} =
        mongoose_wpool:start(redis, global, bad, [], #{password => 12345678}),
    ?assertEqual(nomatch, binary:match(Secret, <<"12345678">>)),
    File = filename:join(?config(priv_dir, Config), "bad.toml"),
    ok = file:write_file(File, <<"[outgoing_pools.redis.x]\nscope = \"single_host\"\n">>),
    ?assertEqual({error, {invalid_config,
                          <<"outgoing_pools.redis.x.host: required, expected a host for scope single_host">>}},
                 mongoose_native_config:pools_from_toml(File)),
    ok = file:write_file(File, <<"[outgoing_pools.redis.x\n">>),
    ?assertMatch({error, {invalid_config, <<"TOML syntax", _/binary>>}},
                 mongoose_native_config:pools_from_toml(File)),
    ?assertEqual([], mongoose_wpool:get_pools()).

executor_restart(_Config) ->
    start_generic(restart, [{workers, 1}]),
    Pid = call(restart, {erlang, self, []}),
    exit(Pid, kill),
    %% The worker sees its executor gone, reattaches to the restarted one.
    wait_until(fun() -> case catch call(restart, {erlang, self, []}) of
                            P when is_pid(P), P =/= Pid -> true;
                            _ -> false
                        end
               end, 50).

wait_until(F, 0) -> ?assert(F());
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(100), wait_until(F, N - 1)
    end.

%% Every annotated file in examples/ passes the same checks a start would.
every_example_file_is_valid(Config) ->
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    Dir = filename:join(filename:dirname(filename:dirname(Source)), "examples"),
    Files = filelib:wildcard(filename:join(Dir, "*.toml")),
    ?assert(length(Files) >= 4),
    [?assertMatch({{ok, N}, _} when N > 0, {mongoose_native_config:check_toml(F), F}) || F <- Files],
    Bad = filename:join(?config(priv_dir, Config), "bad_example.toml"),
    ok = file:write_file(Bad, <<"[outgoing_pools.redis.x.connection]\nport = 0\n">>),
    ?assertEqual({error, {invalid_config, <<"outgoing_pools.redis.x.connection.port: expected an integer between 1 and 65534, got 0">>}},
                 mongoose_native_config:check_toml(Bad)).

%% A type without requests answered in parts refuses a stream as a reply,
%% folds nothing, and leaves no message behind.
stream_on_a_one_part_pool_is_refused(_Config) ->
    {ok, _} = mongoose_wpool:start(redis, global, parts, [{workers, 1}],
                                   #{host => "127.0.0.1", port => 6379}),
    Fold = fun(Part, Acc) -> [Part | Acc] end,
    {{error, {bad_request, Why}}, []} =
        mongoose_wpool:stream(redis, global, parts, key, {q, [<<"PING">>]}, Fold, []),
    ?assertMatch({match, _}, re:run(Why, "one part")),
    ?assertEqual(<<"PONG">>, element(2, mongoose_wpool:call(redis, global, parts, {q, [<<"PING">>]}))),
    ?assertEqual({error, {pool_not_started, {redis, global, nope}}},
                 mongoose_wpool:stream(redis, global, nope, key, {q, []}, Fold, [])),
    ?assertEqual({messages, []}, process_info(self(), messages)),
    ok = mongoose_wpool:stop(redis, global, parts).
