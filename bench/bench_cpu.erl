%% Machine CPU time (all cores, user + system + interrupts) in microseconds,
%% from /proc/stat: the benchmarks' CPU per operation, ours and the
%% alternative's alike, so the database or Redis server counts for both.
-module(bench_cpu).
-export([us/0, per_op/2, process_us/0, per_op_in_vm/2]).

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

%% CPU time of this VM alone (its schedulers and the library's runtime
%% threads) in microseconds, from /proc/self/stat: for benchmarks that do
%% no I/O, where it is the machine CPU of a quiet machine and unaffected by
%% what else runs.
process_us() ->
    {ok, Stat} = file:read_file("/proc/" ++ os:getpid() ++ "/stat"),
    %% Fields after the command name, which is in parentheses.
    [_, After] = binary:split(Stat, <<") ">>),
    Fields = binary:split(After, <<" ">>, [global]),
    UTime = binary_to_integer(lists:nth(12, Fields)),
    STime = binary_to_integer(lists:nth(13, Fields)),
    (UTime + STime) * 1000000 div 100.

%% per_op/2 counting this VM's CPU only.
per_op_in_vm(F, Ops) when is_function(F, 0), is_function(Ops, 1) ->
    Cpu0 = process_us(),
    Result = F(),
    {Result, (process_us() - Cpu0) / max(1, Ops(Result))}.
