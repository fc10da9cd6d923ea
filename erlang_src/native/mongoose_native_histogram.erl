%% @doc Lock-free histograms on counters and atomics, reported as
%% `#{count, min, max, mean, median, 75, 90, 95, 99, 999}' like the Rust
%% side's, with their `sum'. `linear' buckets are exact small values (0..Size-1, larger ones in
%% the last); `log2' buckets cover any non-negative integer.
-module(mongoose_native_histogram).
-export([new/1, new/2, add/2, snapshot/1]).

-define(LOG_BUCKETS, 64).

new(log2) ->
    new(?LOG_BUCKETS, log2).

%% A histogram: bucket counters, then count, sum, min, max (atomics).
new(Buckets, Kind) ->
    A = atomics:new(4, [{signed, true}]),
    atomics:put(A, 3, 1 bsl 62),
    atomics:put(A, 4, -1),
    #{kind => Kind, size => Buckets, buckets => counters:new(Buckets, [write_concurrency]),
      stats => A}.

add(#{kind := Kind, size := Size, buckets := B, stats := A}, V0) ->
    V = max(0, V0),
    I = case Kind of
            linear -> min(V, Size - 1);
            log2 -> min(bits(V), Size - 1)
        end,
    counters:add(B, I + 1, 1),
    atomics:add(A, 1, 1),
    atomics:add(A, 2, V),
    cas_min(A, V),
    cas_max(A, V).

bits(0) -> 0;
bits(V) -> bits(V bsr 1) + 1.

cas_min(A, V) ->
    Old = atomics:get(A, 3),
    case V < Old andalso atomics:compare_exchange(A, 3, Old, V) =/= ok of
        true -> cas_min(A, V);
        false -> ok
    end.

cas_max(A, V) ->
    Old = atomics:get(A, 4),
    case V > Old andalso atomics:compare_exchange(A, 4, Old, V) =/= ok of
        true -> cas_max(A, V);
        false -> ok
    end.

%% `#{count, min, max, mean, median, 75, 90, 95, 99, 999}' like the Rust
%% histograms; percentiles are exact for linear buckets, the bucket's upper
%% bound (capped by max) for log2 ones.
snapshot(#{kind := Kind, size := Size, buckets := B, stats := A}) ->
    Count = atomics:get(A, 1),
    case Count of
        0 ->
            maps:from_list([{K, 0} || K <- [count, sum, min, max, mean, median, 75, 90, 95, 99,
                                            999]]);
        _ ->
            Max = atomics:get(A, 4),
            Counts = [counters:get(B, I) || I <- lists:seq(1, Size)],
            Pct = fun(P) -> min(Max, bucket_value(Kind, pct_index(Counts, ceil_(Count * P)))) end,
            #{count => Count, sum => atomics:get(A, 2), min => atomics:get(A, 3), max => Max,
              mean => atomics:get(A, 2) div Count, median => Pct(0.5), 75 => Pct(0.75),
              90 => Pct(0.9), 95 => Pct(0.95), 99 => Pct(0.99), 999 => Pct(0.999)}
    end.

ceil_(X) -> max(1, ceil(X)).

pct_index(Counts, Rank) -> pct_index(Counts, Rank, 0, 0).

pct_index([C | Rest], Rank, Seen, I) ->
    case Seen + C >= Rank of
        true -> I;
        false -> pct_index(Rest, Rank, Seen + C, I + 1)
    end;
pct_index([], _, _, I) -> I - 1.

bucket_value(linear, I) -> I;
bucket_value(log2, 0) -> 0;
bucket_value(log2, I) -> (1 bsl I) - 1.
