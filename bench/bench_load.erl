%% The load every pool benchmark applies: C processes call `Call(I)' (I the
%% caller's number) back to back for DurationMs, each timing its calls.
-module(bench_load).
-export([measure/3]).

%% {ops/s, p50 us, p99 us}.
-spec measure(pos_integer(), pos_integer(), fun((pos_integer()) -> term())) ->
          {non_neg_integer(), non_neg_integer(), non_neg_integer()}.
measure(C, DurationMs, Call) ->
    Self = self(),
    Deadline = erlang:monotonic_time(millisecond) + DurationMs,
    Pids = [spawn_link(fun() -> Self ! {self(), loop(Deadline, fun() -> Call(I) end, [])} end)
            || I <- lists:seq(1, C)],
    Sorted = lists:sort(lists:append([receive {P, L} -> L end || P <- Pids])),
    N = length(Sorted),
    {N * 1000 div DurationMs, lists:nth(max(1, N div 2), Sorted),
     lists:nth(max(1, N * 99 div 100), Sorted)}.

loop(Deadline, Call, Acc) ->
    T0 = erlang:monotonic_time(microsecond),
    Call(),
    T1 = erlang:monotonic_time(microsecond),
    case T1 div 1000 >= Deadline of
        true -> [T1 - T0 | Acc];
        false -> loop(Deadline, Call, [T1 - T0 | Acc])
    end.
