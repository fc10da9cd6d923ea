%% Stanzas between two datacenters on two Erlang nodes through
%% mongoose_native_gd_transport (1 KB packets, about 1.4 KB frames): throughput
%% saturated, machine CPU per stanza, and end-to-end latency saturated and
%% paced at 1,000/s and 10,000/s; beside a plain gen_tcp loopback stream of
%% the same frames between the same nodes, measured in the same run.
%% Needs a distributed node (bench/run.sh starts one). Prints numbers only.
-module(gd_transport_bench).
-export([run/0]).
-export([receiver_start/0, raw_receiver/0, arrivals/0, latencies/0, reset/0]).

-define(SATURATED_MS, 3000).
-define(PACED_MS, 3000).

run() ->
    %% The second node gets the same runtime size as this one.
    Threads = integer_to_list(application:get_env(mongoose_native, runtime_threads, 0)),
    {ok, Peer, Node} = peer:start_link(#{name => peer:random_name(gd_bench_dc2),
                                         args => ["-mongoose_native", "runtime_threads", Threads,
                                                  "-pa" | code:get_path()]}),
    ok = mongoose_wpool:ensure_started(),
    persistent_term:put({?MODULE, receiver_node}, Node),
    {ok, Endpoint} = erpc:call(Node, ?MODULE, receiver_start, []),
    {ok, T} = mongoose_native_gd_transport:start(
                #{local_host => <<"dc1.bench">>, endpoints => [], connections_per_endpoint => 1},
                fun(_, _, _, _) -> ok end, 1),
    ok = mongoose_native_gd_transport:set_endpoints(T, <<"dc2.bench">>, [Endpoint]),
    Send = fun(Term) -> mongoose_native_gd_transport:send(T, <<"dc2.bench">>,
                                                          <<"alice@dc1.bench">>, Term) end,
    io:format("~-34s ~12s ~10s ~10s ~12s~n",
              ["workload", "stanzas/s", "p50 us", "p99 us", "CPU us/msg"]),
    Sat = saturated(Send, 4),
    row("gd transport, saturated", Sat),
    row("gd transport, paced 10,000/s", paced(Send, 10000)),
    row("gd transport, paced 1,000/s", paced(Send, 1000)),
    {ok, RawEndpoint} = erpc:call(Node, ?MODULE, raw_receiver, []),
    Raw = raw_stream(RawEndpoint),
    row("gen_tcp stream, one frame a send", Raw),
    io:format("~nratio (transport / gen_tcp stream, saturated): ~.2f~n",
              [element(1, Sat) / max(1, element(1, Raw))]),
    mongoose_native_gd_transport:stop(T),
    peer:stop(Peer),
    [{"gd stanzas 1 KB, saturated", element(1, Sat), "stanzas/s",
      "gen_tcp stream of the frames", element(1, Raw)}].

row(Name, {Rate, P50, P99, Cpu}) ->
    io:format("~-34s ~12b ~10b ~10b ~12.1f~n", [Name, Rate, P50, P99, Cpu]).

%% The 1 KB body is built once: the benchmark measures the transport, not
%% the making of stanzas.
stanza() ->
    Body = case persistent_term:get({?MODULE, body}, undefined) of
               undefined -> B = binary:copy(<<"x">>, 1024),
                            persistent_term:put({?MODULE, body}, B), B;
               B -> B
           end,
    {<<"alice@dc1.bench/res">>, <<"bob@dc2.bench/res">>,
     #{sent => erlang:system_time(microsecond)},
     {xmlel, <<"message">>, [{<<"type">>, <<"chat">>}], [{xmlcdata, Body}]}}.

%% N senders as fast as the queue takes them.
saturated(Send, N) ->
    Cpu0 = bench_cpu:us(),
    flush_latencies(),
    Deadline = erlang:monotonic_time(millisecond) + ?SATURATED_MS,
    Pids = [spawn_link(fun() -> blast(Send, Deadline, 0) end) || _ <- lists:seq(1, N)],
    Sent = lists:sum([receive {blasted, P, Count} -> Count end || P <- Pids]),
    collect(Sent, Cpu0).

%% Looks at the clock every 64 stanzas.
blast(Send, Deadline, Sent) when Sent band 63 =:= 0 ->
    case erlang:monotonic_time(millisecond) >= Deadline of
        true -> exit_with(Sent);
        false -> blast_one(Send, Deadline, Sent)
    end;
blast(Send, Deadline, Sent) ->
    blast_one(Send, Deadline, Sent).

blast_one(Send, Deadline, Sent) ->
    case Send(stanza()) of
        ok -> blast(Send, Deadline, Sent + 1);
        {error, _} -> erlang:yield(), blast(Send, Deadline, Sent)
    end.

exit_with(Sent) ->
    [{links, [Parent | _]}] = [process_info(self(), links)],
    Parent ! {blasted, self(), Sent}.

paced(Send, PerSecond) ->
    Cpu0 = bench_cpu:us(),
    flush_latencies(),
    IntervalUs = 1000000 div PerSecond,
    Start = erlang:monotonic_time(microsecond),
    Total = PerSecond * ?PACED_MS div 1000,
    pace(Send, Start, IntervalUs, Total, 0),
    collect(Total, Cpu0).

%% Each millisecond, the stanzas whose time has come: the sender sleeps in
%% between (a sender spinning on the clock would take a whole core of the
%% two, and the latencies measured would be the machine's, not ours).
pace(_Send, _Start, _Interval, Total, Total) -> ok;
pace(Send, Start, Interval, Total, I) ->
    case Start + I * Interval - erlang:monotonic_time(microsecond) of
        Left when Left > 0 ->
            receive after max(1, Left div 1000) -> ok end,
            pace(Send, Start, Interval, Total, I);
        _ ->
            ok = Send(stanza()),
            pace(Send, Start, Interval, Total, I + 1)
    end.

%% Waits until the receiving node has counted all `Expected' stanzas (or
%% nothing more arrived for 3 s); the rate is over the time from the first
%% to the last arrival.
collect(Expected, Cpu0) ->
    wait_arrivals(Expected, -1, 0),
    #{count := Count, first := First, last := Last} = Hist =
        erpc:call(receiver_node(), ?MODULE, latencies, []),
    CpuUs = bench_cpu:us() - Cpu0,
    Count < Expected andalso io:format("(~b of ~b stanzas arrived)~n", [Count, Expected]),
    Elapsed = max(1, Last - First),
    {round(Count / (Elapsed / 1000000)), percentile(Hist, 50), percentile(Hist, 99),
     CpuUs / max(1, Count)}.

wait_arrivals(Expected, Seen, StillMs) ->
    Count = erpc:call(receiver_node(), ?MODULE, arrivals, []),
    if Count >= Expected; StillMs >= 3000 -> ok;
       Count =:= Seen -> timer:sleep(50), wait_arrivals(Expected, Count, StillMs + 50);
       true -> timer:sleep(50), wait_arrivals(Expected, Count, 0)
    end.

receiver_node() -> persistent_term:get({?MODULE, receiver_node}).

flush_latencies() ->
    ok = erpc:call(receiver_node(), ?MODULE, reset, []).

%%--------------------------------------------------------------------
%% On the receiving node
%%--------------------------------------------------------------------

receiver_start() ->
    ok = mongoose_wpool:ensure_started(),
    new_histogram(),
    Handler = fun(_, _, _, {_, _, #{sent := Sent}, _}) -> arrived(Sent) end,
    {ok, T} = mongoose_native_gd_transport:start(
                #{local_host => <<"dc2.bench">>, endpoints => [{"127.0.0.1", 0}]}, Handler, 4),
    persistent_term:put(gd_bench_transport, T),
    [{Ip, Port}] = mongoose_native_gd_transport:listening(T),
    {ok, {binary_to_list(Ip), Port}}.

%% Latencies go into a shared histogram of counters (1 us buckets up to
%% 10 ms, 100 us buckets up to 10 s) that every receiving process updates
%% in place: no collector process, no growing list to sort or collect.
-define(FINE, 10000).
-define(BUCKETS, (?FINE + 100000)).
-define(COUNT, (?BUCKETS + 1)).

new_histogram() ->
    persistent_term:put({?MODULE, hist}, counters:new(?COUNT, [write_concurrency])),
    persistent_term:put({?MODULE, span}, atomics:new(2, [{signed, true}])).

reset() ->
    new_histogram().

arrived(Sent) ->
    Now = erlang:system_time(microsecond),
    Lat = max(0, Now - Sent),
    Bucket = if Lat < ?FINE -> Lat;
                true -> min(?BUCKETS - 1, ?FINE + (Lat - ?FINE) div 100)
             end,
    Hist = persistent_term:get({?MODULE, hist}),
    counters:add(Hist, Bucket + 1, 1),
    counters:add(Hist, ?COUNT, 1),
    Span = persistent_term:get({?MODULE, span}),
    _ = atomics:compare_exchange(Span, 1, 0, Now),
    atomics:put(Span, 2, Now).

arrivals() ->
    counters:get(persistent_term:get({?MODULE, hist}), ?COUNT).

%% The histogram as the sender reads it: its counts and arrival span.
latencies() ->
    Hist = persistent_term:get({?MODULE, hist}),
    Span = persistent_term:get({?MODULE, span}),
    #{count => counters:get(Hist, ?COUNT), first => atomics:get(Span, 1),
      last => atomics:get(Span, 2),
      buckets => [counters:get(Hist, I) || I <- lists:seq(1, ?BUCKETS)]}.

percentile(#{count := 0}, _) -> 0;
percentile(#{count := Count, buckets := Buckets}, Q) ->
    nth_bucket(Buckets, max(1, Count * Q div 100), 0).

nth_bucket([N | Rest], Left, I) when N < Left -> nth_bucket(Rest, Left - N, I + 1);
nth_bucket(_, _, I) when I < ?FINE -> I;
nth_bucket(_, _, I) -> ?FINE + (I - ?FINE) * 100.

%% A gen_tcp receiver of the same frames, decoding each as the transport's
%% workers do.
raw_receiver() ->
    Caller = self(),
    %% The listening socket belongs to the process that serves it.
    spawn(fun() ->
                  {ok, L} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false},
                                               {ip, {127, 0, 0, 1}}, {recbuf, 1 bsl 20}]),
                  {ok, Port} = inet:port(L),
                  Caller ! {raw_port, Port},
                  {ok, S} = gen_tcp:accept(L),
                  inet:setopts(S, [{active, 100}]),
                  raw_loop(S)
          end),
    receive {raw_port, Port} -> {ok, {"127.0.0.1", Port}} end.

raw_loop(S) ->
    receive
        {tcp, S, <<_Clock:64, KL:16, _Key:KL/binary, Bin/binary>>} ->
            {_, _, #{sent := Sent}, _} = binary_to_term(Bin, [safe]),
            arrived(Sent),
            raw_loop(S);
        {tcp_passive, S} -> inet:setopts(S, [{active, 100}]), raw_loop(S);
        {tcp_closed, S} -> ok
    end.

raw_stream({Ip, Port}) ->
    {ok, S} = gen_tcp:connect(Ip, Port, [binary, {packet, 4}, {nodelay, true}, {sndbuf, 1 bsl 20}]),
    Cpu0 = bench_cpu:us(),
    flush_latencies(),
    Deadline = erlang:monotonic_time(millisecond) + ?SATURATED_MS,
    Sent = raw_send(S, Deadline, 0),
    R = collect(Sent, Cpu0),
    gen_tcp:close(S),
    R.

raw_send(S, Deadline, Sent) ->
    case erlang:monotonic_time(millisecond) >= Deadline of
        true -> Sent;
        false ->
            Key = <<"alice@dc1.bench">>,
            Bin = term_to_binary(stanza()),
            ok = gen_tcp:send(S, <<(erlang:system_time(microsecond)):64, (byte_size(Key)):16,
                                  Key/binary, Bin/binary>>),
            raw_send(S, Deadline, Sent + 1)
    end.
