%% Runs every benchmark (each prints its own details) and ends with one
%% table: workload, this library's figure, the best alternative measured in
%% the same run, and the ratio. Timings never fail anything.
-module(bench_all).
-export([run/0]).

run() ->
    Rows = lists:append([section(handover_bench), section(redis_bench), section(metrics_bench),
                         section(redis_cluster_bench),
                         section(rdbms_bench), section(rabbit_bench), section(ldap_bench),
                         section(gd_refresh_bench), section(gd_transport_bench)]),
    io:format("~n~-36s ~12s ~-11s ~-32s ~12s ~7s~n",
              ["workload", "this library", "unit", "best alternative, same run", "", "ratio"]),
    [io:format("~-36s ~12b ~-11s ~-32s ~12b ~7.2f~n",
               [W, Ours, Unit, AltName, Alt, Ours / max(Alt, 1)])
     || {W, Ours, Unit, AltName, Alt} <- Rows],
    ok.

section(Module) ->
    io:format("~n== ~s ==~n", [Module]),
    try Module:run()
    catch Class:Reason ->
            io:format("~s did not complete: ~p:~p~n", [Module, Class, Reason]),
            []
    end.
