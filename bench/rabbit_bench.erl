%% Publishes per second through a 10-worker rabbit pool, each of C callers
%% calling {amqp_publish, ...} in a loop (the call returns once the publish
%% is sent, or with confirms once the broker confirmed it), with confirms
%% off and on at 16 and 128 callers; beside lapin alone (no Erlang: the
%% lapin_publish example, C tokio tasks on 10 connections) in the same run.
%% Messages go to a queue capped at 10,000 (the broker drops its head);
%% rates count until the broker has taken every publish (see measure/2).
-module(rabbit_bench).
-export([run/0]).

-define(DURATION_MS, 3000).
-define(QUEUE, <<"mn.bench">>).

run() ->
    ok = mongoose_wpool:ensure_started(),
    Lapin = build_lapin(),
    io:format("~-38s ~9s ~8s ~8s | ~12s ~8s ~8s | ~6s~n",
              ["workload", "ops/s", "p50 us", "p99 us", "lapin ops/s", "p50 us", "p99 us", "ratio"]),
    Rows = [row(Lapin, Confirms, C) || Confirms <- [false, true], C <- [16, 128]],
    mongoose_wpool:stop(rabbit, global, bench),
    Rows.

row(Lapin, Confirms, C) ->
    Tag = case Confirms of true -> bench_confirms; false -> bench end,
    {ok, _} = mongoose_wpool:start(rabbit, global, Tag, [{workers, 10}, {call_timeout, 60000}],
                                   #{host => "127.0.0.1", confirms_enabled => Confirms}),
    {ok, _} = mongoose_wpool:call(rabbit, global, Tag,
                                  {amqp_call, {'queue.declare', 0, ?QUEUE, false, false, false, false,
                                               false, [{<<"x-max-length">>, long, 10000}]}}),
    {Ops, P50, P99} = measure(Tag, C),
    mongoose_wpool:stop(rabbit, global, Tag),
    {Ref, RefP50, RefP99} = lapin(Lapin, C, Confirms),
    Name = io_lib:format("publish, confirms ~s, ~b callers", [onoff(Confirms), C]),
    io:format("~-38s ~9b ~8b ~8b | ~12b ~8b ~8b | ~6.2f~n",
              [Name, Ops, P50, P99, Ref, RefP50, RefP99, Ops / max(Ref, 1)]),
    {io_lib:format("rabbit ~s", [Name]), Ops, "ops/s",
     io_lib:format("lapin alone, ~b tasks", [C]), Ref}.

onoff(true) -> "on";
onoff(false) -> "off".

%% Publishes per second counted until the broker has taken them all: a
%% synchronous method on every worker's channel returns only after it has.
measure(Tag, C) ->
    Self = self(),
    T0 = erlang:monotonic_time(microsecond),
    Deadline = T0 div 1000 + ?DURATION_MS,
    Pids = [spawn_link(fun() -> Self ! {self(), loop(Tag, Deadline, [])} end) || _ <- lists:seq(1, C)],
    Sorted = lists:sort(lists:append([receive {P, L} -> L end || P <- Pids])),
    Passive = {'queue.declare', 0, ?QUEUE, true, false, false, false, false, []},
    [{ok, _} = mongoose_wpool:call(rabbit, global, Tag, Key, {amqp_call, Passive}) || Key <- keys(10)],
    Seconds = (erlang:monotonic_time(microsecond) - T0) / 1000000,
    N = length(Sorted),
    {round(N / Seconds), lists:nth(max(1, N div 2), Sorted),
     lists:nth(max(1, (N * 99) div 100), Sorted)}.

%% One hash key for each of N workers.
keys(N) ->
    maps:values(lists:foldl(fun(K, Acc) -> maps:put(erlang:phash2(K, N), K, Acc) end, #{},
                            lists:seq(1000, 1, -1))).


loop(Tag, Deadline, Acc) ->
    Publish = {amqp_publish, {'basic.publish', 0, <<>>, ?QUEUE, false, false},
               mongoose_amqp:message(<<"payload-of-a-bench-message">>)},
    T0 = erlang:monotonic_time(microsecond),
    ok = mongoose_wpool:call(rabbit, global, Tag, Publish),
    T1 = erlang:monotonic_time(microsecond),
    case T1 div 1000 >= Deadline of
        true -> [T1 - T0 | Acc];
        false -> loop(Tag, Deadline, [T1 - T0 | Acc])
    end.

%% The lapin_publish example, built once: the path of its binary.
build_lapin() ->
    Target = case os:getenv("CARGO_TARGET_DIR") of
                 false -> "target";
                 Dir -> Dir
             end,
    os:cmd("cargo build --release -q -p mongoose_native --example lapin_publish 2>&1"),
    filename:join([Target, "release", "examples", "lapin_publish"]).

lapin(Bin, C, Confirms) ->
    Out = os:cmd(Bin ++ " " ++ integer_to_list(C) ++ " " ++ integer_to_list(?DURATION_MS div 1000)
                 ++ case Confirms of true -> " confirms"; false -> "" end ++ " 2>&1"),
    case re:run(Out, "publishes=([0-9]+) p50_us=([0-9]+) p99_us=([0-9]+)",
                [{capture, all_but_first, list}]) of
        {match, [N, P50, P99]} -> {list_to_integer(N), list_to_integer(P50), list_to_integer(P99)};
        nomatch -> io:format("lapin_publish: ~s~n", [Out]), {0, 0, 0}
    end.
