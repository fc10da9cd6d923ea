%% Machine CPU time (all cores, user + system + interrupts) in microseconds,
%% from /proc/stat: the benchmarks' CPU per operation, ours and the
%% alternative's alike, so the database or Redis server counts for both.
-module(bench_cpu).
-export([us/0, per_op/2]).

us() ->
    {ok, Stat} = file:read_file("/proc/stat"),
    [Line | _] = binary:split(Stat, <<"\n">>),
    [<<"cpu">> | Fields] = binary:split(Line, <<" ">>, [global, trim_all]),
    [User, Nice, System, _Idle, _IoWait, Irq, SoftIrq | _] = [binary_to_integer(F) || F <- Fields],
    (User + Nice + System + Irq + SoftIrq) * 1000000 div 100.

%% Runs F (which returns the operations it did) and returns
%% {Result, CPU microseconds per operation}.
per_op(F, Ops) when is_function(F, 0), is_function(Ops, 1) ->
    Cpu0 = us(),
    Result = F(),
    {Result, (us() - Cpu0) / max(1, Ops(Result))}.
