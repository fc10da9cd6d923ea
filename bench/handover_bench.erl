%% The hand-over alone: a request the runtime answers with no I/O
%% (`rdbms_engine' on a 10-worker pgsql pool: parse, admission, worker,
%% reply, exactly the path of every pool request) at 1, 16 and 128 callers,
%% beside ten gen_servers answering each call at once, the callers spread
%% over them as the pool spreads its callers over its ten workers. Prints
%% ops/s, p50, p99 and CPU per call for both: the VM's own CPU, which with
%% no I/O is all the machine spends on it, and which other load on the
%% machine does not inflate.
-module(handover_bench).
-behaviour(gen_server).
-export([run/0, run/1]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(DURATION_MS, 3000).
-define(WORKERS, 10).

run() -> run([1, 16, 128]).

run(Concurrencies) ->
    ok = mongoose_wpool:ensure_started(),
    {ok, _} = mongoose_wpool:start(rdbms, global, handover, [{workers, ?WORKERS}],
                                   #{driver => pgsql, host => "127.0.0.1", database => "test",
                                     username => "postgres", password => ""}),
    pgsql = engine(1),
    Servers = list_to_tuple([begin {ok, P} = gen_server:start(?MODULE, [], []), P end
                             || _ <- lists:seq(1, ?WORKERS)]),
    io:format("~-22s ~9s ~7s ~7s ~7s | ~12s ~7s ~7s ~7s | ~6s ~6s~n",
              ["callers", "ops/s", "p50 us", "p99 us", "CPU us", "gen_server/s", "p50 us",
               "p99 us", "CPU us", "ops", "CPU"]),
    Rows = [row(C, Servers) || C <- Concurrencies],
    [gen_server:stop(P) || P <- tuple_to_list(Servers)],
    mongoose_wpool:stop(rdbms, global, handover),
    Rows.

engine(_) -> mongoose_wpool:call(rdbms, global, handover, rdbms_engine).

row(C, Servers) ->
    Baseline = fun(I) -> pgsql = gen_server:call(element(1 + I rem ?WORKERS, Servers), engine) end,
    {{Ops, P50, P99}, Cpu} = measure(C, fun engine/1),
    {{Ref, RefP50, RefP99}, RefCpu} = measure(C, Baseline),
    io:format("~-22b ~9b ~7b ~7b ~7.1f | ~12b ~7b ~7b ~7.1f | ~6.2f ~6.2f~n",
              [C, Ops, P50, P99, Cpu, Ref, RefP50, RefP99, RefCpu, Ops / max(Ref, 1),
               Cpu / max(RefCpu, 0.001)]),
    {io_lib:format("hand-over, ~b callers", [C]), Ops, "ops/s", "10 gen_servers", Ref}.

measure(C, Call) ->
    bench_cpu:per_op_in_vm(fun() -> bench_load:measure(C, ?DURATION_MS, Call) end,
                     fun({O, _, _}) -> O * ?DURATION_MS div 1000 end).

init([]) -> {ok, pgsql}.
handle_call(engine, _From, Engine) -> {reply, Engine, Engine}.
handle_cast(_, State) -> {noreply, State}.
