%% GET at 128 callers through a redis pool in cluster mode (the three
%% masters on 7000-7002, scripts/redis_topologies.sh), beside the same load
%% on a single-Redis pool (6379) and redis-benchmark --cluster, all in the
%% same run. Keys are spread over every slot. Prints numbers and returns a
%% summary row for bench_all; timings never fail anything.
-module(redis_cluster_bench).
-export([run/0]).

-define(CALLERS, 128).
-define(DURATION_MS, 3000).
-define(KEYS, 1000).
-define(REDIS_BENCHMARK_N, 200000).

run() ->
    ok = mongoose_wpool:ensure_started(),
    Seeds = [#{host => <<"127.0.0.1">>, port => P} || P <- [7000, 7001, 7002]],
    {ok, _} = mongoose_wpool:start(redis, global, bench_cluster, [{workers, 10}],
                                   #{mode => <<"cluster">>, servers => Seeds}),
    {ok, _} = mongoose_wpool:start(redis, global, bench_single, [{workers, 10}], #{}),
    Keys = list_to_tuple([<<"bench:", (integer_to_binary(I))/binary>> || I <- lists:seq(1, ?KEYS)]),
    [{ok, _} = mongoose_wpool:call(redis, global, Tag, {q, [<<"SET">>, K, <<"value">>]})
     || Tag <- [bench_cluster, bench_single], K <- tuple_to_list(Keys)],
    Cluster = measure(bench_cluster, Keys),
    Single = measure(bench_single, Keys),
    Ref = redis_benchmark(),
    mongoose_wpool:stop(redis, global, bench_cluster),
    mongoose_wpool:stop(redis, global, bench_single),
    io:format("~-40s ~9s~n", ["workload (GET, 128 callers)", "ops/s"]),
    [io:format("~-40s ~9b~n", [W, N])
     || {W, N} <- [{"cluster pool (3 masters)", Cluster}, {"single-Redis pool", Single},
                   {"redis-benchmark --cluster -c 128", Ref}]],
    io:format("cluster/single ~.2f, cluster/redis-benchmark ~.2f~n",
              [Cluster / max(Single, 1), Cluster / max(Ref, 1)]),
    [{"redis GET, 128 callers, cluster", Cluster, "ops/s", "single Redis, same pool type", Single},
     {"redis GET, 128 callers, cluster", Cluster, "ops/s", "redis-benchmark --cluster -c 128", Ref}].

measure(Tag, Keys) ->
    Self = self(),
    Deadline = erlang:monotonic_time(millisecond) + ?DURATION_MS,
    Pids = [spawn_link(fun() -> Self ! {self(), loop(Tag, Keys, I, Deadline, 0)} end)
            || I <- lists:seq(1, ?CALLERS)],
    Calls = lists:sum([receive {P, N} -> N end || P <- Pids]),
    round(Calls / (?DURATION_MS / 1000)).

loop(Tag, Keys, I, Deadline, N) ->
    K = element(I rem ?KEYS + 1, Keys),
    {ok, _} = mongoose_wpool:call(redis, global, Tag, {q, [<<"GET">>, K]}),
    case erlang:monotonic_time(millisecond) >= Deadline of
        true -> N + 1;
        false -> loop(Tag, Keys, I + 7, Deadline, N + 1)
    end.

%% redis-benchmark's own cluster mode, random keys, no pipelining.
redis_benchmark() ->
    Out = os:cmd("redis-benchmark --cluster -h 127.0.0.1 -p 7000 -t get -r 100000 -n "
                 ++ integer_to_list(?REDIS_BENCHMARK_N) ++ " --csv -c "
                 ++ integer_to_list(?CALLERS) ++ " 2>/dev/null"),
    case re:run(Out, "\"GET\",\"([0-9.]+)\"", [{capture, all_but_first, list}]) of
        {match, [Rps]} ->
            case string:to_float(Rps) of
                {F, _} when is_float(F) -> round(F);
                _ -> list_to_integer(Rps)
            end;
        nomatch -> 0
    end.
