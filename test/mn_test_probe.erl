%% How late an unrelated process's 2 ms wake-ups come while something else
%% runs: the probe of the cases that check that a NIF never stalls a
%% scheduler.
-module(mn_test_probe).
-export([start/0, stop/1]).

-spec start() -> pid().
start() ->
    Self = self(),
    spawn_link(fun() -> loop(Self, []) end).

%% {P99, Max, Count}: the lateness of its wake-ups, in microseconds.
-spec stop(pid()) -> {integer(), integer(), non_neg_integer()}.
stop(Probe) ->
    Probe ! stop,
    case receive {?MODULE, Probe, L} -> lists:sort(L) after 5000 -> error(probe_stuck) end of
        [] -> {0, 0, 0};
        Sorted -> {lists:nth(max(1, length(Sorted) * 99 div 100), Sorted), lists:last(Sorted),
                   length(Sorted)}
    end.

loop(Parent, Acc) ->
    T0 = erlang:monotonic_time(microsecond),
    receive
        stop -> Parent ! {?MODULE, self(), Acc}
    after 2 ->
        loop(Parent, [erlang:monotonic_time(microsecond) - T0 - 2000 | Acc])
    end.
