%% mongoose_wpool:call(redis, ..., {q, [<<"GET">>, K]}) throughput and
%% latency at 1, 16 and 128 concurrent callers, beside redis-benchmark at the
%% same client count (no pipelining) in the same run. Prints numbers and
%% returns summary rows for bench_all.
-module(redis_bench).
-export([run/0, run/1]).

-define(DURATION_MS, 3000).
-define(REDIS_BENCHMARK_N, 200000).

run() -> run([1, 16, 128]).

run(Concurrencies) ->
    ok = mongoose_wpool:ensure_started(),
    {ok, _} = mongoose_wpool:start(redis, global, bench, [{workers, 10}], #{}),
    {ok, <<"OK">>} = call({q, [<<"SET">>, <<"bench:key">>, <<"value">>]}),
    io:format("~-26s ~9s ~8s ~8s ~7s | ~16s ~8s ~8s ~7s | ~6s~n",
              ["workload", "ops/s", "p50 us", "p99 us", "CPU us", "redis-benchmark/s", "p50 us",
               "p99 us", "CPU us", "ratio"]),
    Rows = [row(C) || C <- Concurrencies],
    mongoose_wpool:stop(redis, global, bench),
    Rows.

call(Req) -> mongoose_wpool:call(redis, global, bench, Req).

%% CPU us: machine CPU per GET (Redis's included), ours and redis-benchmark's.
row(C) ->
    Get = fun(_) -> {ok, _} = call({q, [<<"GET">>, <<"bench:key">>]}) end,
    {{Ops, P50, P99}, Cpu} = bench_cpu:per_op(fun() -> bench_load:measure(C, ?DURATION_MS, Get) end,
                                              fun({O, _, _}) -> O * ?DURATION_MS div 1000 end),
    {{Ref, RefP50, RefP99}, RefCpu} = bench_cpu:per_op(fun() -> redis_benchmark(C) end,
                                                       fun(_) -> ?REDIS_BENCHMARK_N end),
    io:format("~-26s ~9b ~8b ~8b ~7.1f | ~16b ~8b ~8b ~7.1f | ~6.2f~n",
              [io_lib:format("GET, ~b callers", [C]), Ops, P50, P99, Cpu, Ref, RefP50, RefP99,
               RefCpu, Ops / max(Ref, 1)]),
    {io_lib:format("redis GET, ~b callers", [C]), Ops, "ops/s",
     io_lib:format("redis-benchmark -c ~b", [C]), Ref}.

%% redis-benchmark at the same client count, no pipelining: {ops/s, p50, p99}.
redis_benchmark(C) ->
    Out = os:cmd("redis-benchmark -h 127.0.0.1 -p 6379 -t get -n " ++ integer_to_list(?REDIS_BENCHMARK_N)
                 ++ " --csv -c "
                 ++ integer_to_list(C) ++ " 2>/dev/null"),
    case re:run(Out, "\"GET\",\"([0-9.]+)\",\"[0-9.]+\",\"[0-9.]+\",\"([0-9.]+)\",\"[0-9.]+\",\"([0-9.]+)\"",
                [{capture, all_but_first, list}]) of
        {match, [Rps, P50, P99]} -> {round(num(Rps)), round(num(P50) * 1000), round(num(P99) * 1000)};
        nomatch -> {0, 0, 0}
    end.

num(S) ->
    case string:to_float(S) of
        {F, _} when is_float(F) -> F;
        _ -> float(list_to_integer(S))
    end.
