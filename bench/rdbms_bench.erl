%% Prepared `SELECT ?::int' through mongoose_rdbms:execute/3 on a 10-worker
%% pool, pgsql and then odbc (psqlODBC, the DSN scripts/setup.sh registers),
%% at 1, 16 and 128 concurrent callers, beside pgbench running
%% the same prepared statement in the same run with as many connections as
%% the pool may use (the callers, at most the 10 workers). Then the client
%% alone, with no Erlang (bench/pg_ceiling, which bench/run.sh builds and
%% names in PG_CEILING): sqlx one query at a time per connection (the pool's
%% driver until 2026-12-01), and tokio-postgres pipelining the queries of
%% one connection (the pool's driver since), each beside pgbench again.
%% Prints numbers only.
-module(rdbms_bench).
-export([run/0, run/1]).

-define(DURATION_S, 3).
-define(WORKERS, 10).

run() -> run([1, 16, 128]).

run(Concurrencies) ->
    ok = mongoose_wpool:ensure_started(),
    mongoose_rdbms:prepare(bench_select, bench, [x], <<"SELECT ?::int">>),
    io:format("~-32s ~9s ~8s ~8s ~7s | ~11s ~7s ~7s | ~6s~n",
              ["workload", "ops/s", "p50 us", "p99 us", "CPU us", "pgbench tps", "clients",
               "CPU us", "ratio"]),
    Drivers = [{pgsql, #{driver => pgsql, host => "127.0.0.1", database => "test",
                         username => "postgres", password => ""}},
               {odbc, #{driver => odbc, settings => "DSN=mongoose_pgsql"}}],
    lists:append([rows(Driver, Conn, Concurrencies) || {Driver, Conn} <- Drivers])
        ++ ceiling(os:getenv("PG_CEILING"), Concurrencies).

rows(Driver, Conn, Concurrencies) ->
    {ok, _} = mongoose_wpool:start(rdbms, global, default, [{workers, ?WORKERS}], Conn),
    {selected, [_]} = mongoose_rdbms:execute(global, bench_select, [7]),
    Rows = [row(Driver, C) || C <- Concurrencies],
    mongoose_wpool:stop(rdbms, global, default),
    Rows.

%% CPU us: machine CPU per query (PostgreSQL's included), ours and pgbench's.
row(Driver, C) ->
    Select = fun(_) ->
                     {selected, [_]} = mongoose_rdbms:execute(global, bench_select,
                                                              [rand:uniform(1000)])
             end,
    Measure = fun() -> bench_load:measure(C, ?DURATION_S * 1000, Select) end,
    {{Ops, P50, P99}, Cpu} = bench_cpu:per_op(Measure, fun({O, _, _}) -> O * ?DURATION_S end),
    Clients = min(C, ?WORKERS),
    {Tps, PgCpu} = bench_cpu:per_op(fun() -> pgbench(Clients) end, fun(T) -> T * ?DURATION_S end),
    io:format("~-32s ~9b ~8b ~8b ~7.1f | ~11b ~7b ~7.1f | ~6.2f~n",
              [io_lib:format("~s SELECT ?::int, ~b callers", [Driver, C]), Ops, P50, P99, Cpu, Tps, Clients,
               PgCpu, Ops / max(Tps, 1)]),
    {io_lib:format("~s prepared SELECT, ~b callers", [Driver, C]), Ops, "ops/s",
     io_lib:format("pgbench -M prepared -c ~b", [Clients]), Tps}.

%% What the pgsql rows could reach through the same client at best.
ceiling(false, _) ->
    io:format("PG_CEILING unset: no client-alone rows (bench/run.sh sets it)~n"),
    [];
ceiling(Bin, Concurrencies) ->
    [ceiling_row(Bin, Client, C) || C <- Concurrencies, Client <- ["sqlx", "pipelined"]].

ceiling_row(Bin, Client, C) ->
    Run = fun() ->
                  Out = os:cmd(io_lib:format("~s ~s ~b ~b 2>&1", [Bin, Client, C, ?DURATION_S])),
                  list_to_integer(string:trim(Out))
          end,
    {Ops, Cpu} = bench_cpu:per_op(Run, fun(O) -> O * ?DURATION_S end),
    Clients = min(C, ?WORKERS),
    {Tps, PgCpu} = bench_cpu:per_op(fun() -> pgbench(Clients) end, fun(T) -> T * ?DURATION_S end),
    Name = io_lib:format("~s alone, ~b tasks", [Client, C]),
    io:format("~-32s ~9b ~8s ~8s ~7.1f | ~11b ~7b ~7.1f | ~6.2f~n",
              [Name, Ops, "-", "-", Cpu, Tps, Clients, PgCpu, Ops / max(Tps, 1)]),
    {io_lib:format("pgsql client: ~s alone, ~b tasks", [Client, C]), Ops, "ops/s",
     io_lib:format("pgbench -M prepared -c ~b", [Clients]), Tps}.

pgbench(Clients) ->
    Script = "/tmp/mongoose_native_pgbench.sql",
    ok = file:write_file(Script, <<"\\set x random(1, 1000)\nSELECT :x::int;\n">>),
    %% Without TLS, as the pool connects: libpq's default (sslmode=prefer)
    %% would make pgbench pay for TLS on a server with ssl = on.
    Out = os:cmd(io_lib:format("PGSSLMODE=disable "
                               "pgbench -n -M prepared -h 127.0.0.1 -U postgres -c ~b -j ~b "
                               "-T ~b -f ~s test 2>&1", [Clients, min(Clients, 2), ?DURATION_S, Script])),
    case re:run(Out, "tps = ([0-9.]+)", [{capture, all_but_first, list}]) of
        {match, [Tps]} -> round(list_to_float(Tps));
        nomatch -> 0
    end.
