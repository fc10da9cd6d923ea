%% Stanzas between two datacenters on two Erlang nodes through
%% mongoose_native_gd_transport (1 KB packets, about 1.4 KB frames): throughput
%% saturated, machine CPU per stanza, and end-to-end latency saturated and
%% paced at 1,000/s and 10,000/s; beside a plain gen_tcp loopback stream of
%% the same frames between the same nodes, measured in the same run.
%% Needs a distributed node (bench/run.sh starts one). Prints numbers only.
-module(gd_transport_bench).
-export([run/0]).
-export([receiver_start/1, raw_receiver/1]).

-define(SATURATED_MS, 3000).
-define(PACED_MS, 3000).

run() ->
    %% The second node gets the same runtime size as this one.
    Threads = integer_to_list(application:get_env(mongoose_native, runtime_threads, 0)),
    {ok, Peer, Node} = peer:start_link(#{name => peer:random_name(gd_bench_dc2),
                                         args => ["-mongoose_native", "runtime_threads", Threads,
                                                  "-pa" | code:get_path()]}),
    ok = mongoose_wpool:ensure_started(),
    Collector = self(),
    {ok, Endpoint} = erpc:call(Node, ?MODULE, receiver_start, [Collector]),
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
    {ok, RawEndpoint} = erpc:call(Node, ?MODULE, raw_receiver, [Collector]),
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
    Cpu0 = cpu_us(),
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
    Cpu0 = cpu_us(),
    flush_latencies(),
    IntervalUs = 1000000 div PerSecond,
    Start = erlang:monotonic_time(microsecond),
    Total = PerSecond * ?PACED_MS div 1000,
    pace(Send, Start, IntervalUs, Total, 0),
    collect(Total, Cpu0).

pace(_Send, _Start, _Interval, Total, Total) -> ok;
pace(Send, Start, Interval, Total, I) ->
    Due = Start + I * Interval,
    wait_until(Due),
    ok = Send(stanza()),
    pace(Send, Start, Interval, Total, I + 1).

wait_until(Due) ->
    case Due - erlang:monotonic_time(microsecond) of
        Left when Left > 1500 -> timer:sleep(Left div 1000 - 1), wait_until(Due);
        Left when Left > 0 -> wait_until(Due);
        _ -> ok
    end.

%% Waits until the receiver has reported all `Expected' stanzas (it reports
%% each burst after 300 ms of quiet); the rate is over the time from the
%% first to the last arrival.
collect(Expected, Cpu0) ->
    {Count, Lats, First, Last} = gather(Expected, {0, [], undefined, undefined}),
    CpuUs = cpu_us() - Cpu0,
    N = max(1, length(Lats)),
    P = fun(Q) -> case Lats of [] -> 0; _ -> lists:nth(max(1, (N * Q) div 100), Lats) end end,
    Elapsed = case First of undefined -> 1; _ -> max(1, Last - First) end,
    {round(Count / (Elapsed / 1000000)), P(50), P(99), CpuUs / max(1, Count)}.

gather(Expected, {Count, _, _, _} = Acc) when Count >= Expected ->
    Acc;
gather(Expected, {Count, Lats, First, Last}) ->
    receive
        {latencies, C, L, F, La} ->
            %% Monotonic times may be negative: `undefined' means none yet.
            {F1, La1} = case First of undefined -> {F, La}; _ -> {min(F, First), max(La, Last)} end,
            gather(Expected, {Count + C, lists:merge(L, Lats), F1, La1})
    after 30000 ->
            io:format("(~b of ~b stanzas arrived)~n", [Count, Expected]),
            {Count, Lats, First, Last}
    end.

flush_latencies() ->
    receive {latencies, _, _, _, _} -> flush_latencies() after 0 -> ok end.

%% Machine CPU time (all cores) in microseconds, from /proc/stat.
cpu_us() ->
    {ok, Stat} = file:read_file("/proc/stat"),
    [Line | _] = binary:split(Stat, <<"\n">>),
    [<<"cpu">> | Fields] = binary:split(Line, <<" ">>, [global, trim_all]),
    [User, Nice, System, _Idle, _IoWait, Irq, SoftIrq | _] = [binary_to_integer(F) || F <- Fields],
    (User + Nice + System + Irq + SoftIrq) * 1000000 div 100.

%%--------------------------------------------------------------------
%% On the receiving node
%%--------------------------------------------------------------------

receiver_start(Collector) ->
    ok = mongoose_wpool:ensure_started(),
    Stats = spawn(fun() -> stats(Collector, idle) end),
    Handler = fun(_, _, _, {_, _, #{sent := Sent}, _}) ->
                      Stats ! {lat, erlang:system_time(microsecond) - Sent}
              end,
    {ok, T} = mongoose_native_gd_transport:start(
                #{local_host => <<"dc2.bench">>, endpoints => [{"127.0.0.1", 0}]}, Handler, 4),
    persistent_term:put(gd_bench_transport, T),
    [{Ip, Port}] = mongoose_native_gd_transport:listening(T),
    {ok, {binary_to_list(Ip), Port}}.

%% Gathers latencies of one burst; reports 300 ms after the last one.
stats(Collector, idle) ->
    receive {lat, L} -> stats(Collector, {1, [L], erlang:monotonic_time(microsecond),
                                          erlang:monotonic_time(microsecond)}) end;
stats(Collector, {N, Lats, First, Last}) ->
    receive
        {lat, L} -> stats(Collector, {N + 1, [L | Lats], First, erlang:monotonic_time(microsecond)})
    after 300 ->
            Collector ! {latencies, N, lists:sort(Lats), First, Last},
            stats(Collector, idle)
    end.

%% A gen_tcp receiver of the same frames, decoding each as the transport's
%% workers do.
raw_receiver(Collector) ->
    Stats = spawn(fun() -> stats(Collector, idle) end),
    Caller = self(),
    %% The listening socket belongs to the process that serves it.
    spawn(fun() ->
                  {ok, L} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false},
                                               {ip, {127, 0, 0, 1}}, {recbuf, 1 bsl 20}]),
                  {ok, Port} = inet:port(L),
                  Caller ! {raw_port, Port},
                  {ok, S} = gen_tcp:accept(L),
                  inet:setopts(S, [{active, 100}]),
                  raw_loop(S, Stats)
          end),
    receive {raw_port, Port} -> {ok, {"127.0.0.1", Port}} end.

raw_loop(S, Stats) ->
    receive
        {tcp, S, <<_Clock:64, KL:16, _Key:KL/binary, Bin/binary>>} ->
            {_, _, #{sent := Sent}, _} = binary_to_term(Bin, [safe]),
            Stats ! {lat, erlang:system_time(microsecond) - Sent},
            raw_loop(S, Stats);
        {tcp_passive, S} -> inet:setopts(S, [{active, 100}]), raw_loop(S, Stats);
        {tcp_closed, S} -> ok
    end.

raw_stream({Ip, Port}) ->
    {ok, S} = gen_tcp:connect(Ip, Port, [binary, {packet, 4}, {nodelay, true}, {sndbuf, 1 bsl 20}]),
    Cpu0 = cpu_us(),
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
