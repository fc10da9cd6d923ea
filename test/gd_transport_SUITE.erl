%% Global-distribution transport through the NIF: two datacenters in one
%% node (each with its own listener), ordering, wire compatibility with
%% plain gen_tcp peers written from CONTRACTS.md, bad peers, TLS.
-module(gd_transport_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

all() ->
    [both_ways, order_over_many_connections, library_reads_plain_erlang_frames,
     plain_erlang_reads_library_frames, bad_peers_are_disconnected, unsafe_terms_are_dropped,
     unknown_host_fails_fast, tls_links_and_refuses_wrong_certificates,
     slow_worker_slows_its_senders, killed_worker_is_replaced, hostile_peers].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    Config.

end_per_suite(_Config) ->
    ok.

%% A datacenter: a transport whose handler reports to the test process.
dc(Name, Extra) ->
    Self = self(),
    Handler = fun(Host, Transfer, Key, Term) -> Self ! {got, Name, Host, Transfer, Key, Term} end,
    {ok, T} = mongoose_native_gd_transport:start(
                maps:merge(#{local_host => Name, endpoints => [{"127.0.0.1", 0}]}, Extra),
                Handler, 4),
    T.

link(From, ToName, To) ->
    ok = mongoose_native_gd_transport:set_endpoints(From, ToName,
                                                    mongoose_native_gd_transport:listening(To)).

got(Timeout) ->
    receive {got, _, _, _, _, _} = G -> G after Timeout -> ct:fail(nothing_received) end.

stanza(N) -> {<<"alice@dc1">>, <<"bob@dc2">>, #{acc => N}, {xmlel, <<"message">>, [], []}}.

%%--------------------------------------------------------------------

both_ways(_Config) ->
    Dc1 = dc(<<"dc1.test">>, #{}),
    Dc2 = dc(<<"dc2.test">>, #{}),
    link(Dc1, <<"dc2.test">>, Dc2),
    link(Dc2, <<"dc1.test">>, Dc1),
    ok = mongoose_native_gd_transport:send(Dc1, <<"dc2.test">>, <<"alice@dc1.test">>, stanza(1)),
    {got, <<"dc2.test">>, <<"dc1.test">>, Transfer, <<"alice@dc1.test">>, S1} = got(2000),
    ?assertEqual(stanza(1), S1),
    ?assert(Transfer >= 0 andalso Transfer < 1000000),
    ok = mongoose_native_gd_transport:send(Dc2, <<"dc1.test">>, <<"bob@dc2.test">>, stanza(2)),
    {got, <<"dc1.test">>, <<"dc2.test">>, _, _, S2} = got(2000),
    ?assertEqual(stanza(2), S2),
    M1 = mongoose_native_gd_transport:metrics(Dc1),
    ?assertEqual(1, maps:get(mod_global_distrib_outgoing_messages_count, M1)),
    ?assertEqual(1, maps:get(mod_global_distrib_incoming_messages_count, M1)),
    ?assertEqual(1, maps:get(mod_global_distrib_outgoing_established_count, M1)),
    ?assertEqual(1, maps:get(mod_global_distrib_incoming_first_packet_count, M1)),
    %% Per remote host too: dc1 sent its one stanza to dc2.
    #{<<"dc2.test">> := PerDc2} = maps:get(per_host, M1),
    ?assertEqual(1, maps:get(mod_global_distrib_outgoing_messages_count, PerDc2)),
    ?assertEqual(1, maps:get(mod_global_distrib_incoming_messages_count, PerDc2)),
    %% The transfer time of dc2's one stanza, in the totals and for dc2.
    ?assertMatch(#{count := 1, max := TMax} when TMax >= 0 andalso TMax < 1000000,
                 maps:get(mod_global_distrib_incoming_transfer_time, PerDc2)),
    ?assertMatch(#{count := 1}, maps:get(mod_global_distrib_incoming_transfer_time, M1)),
    %% One stanza each way: each side timed one in each queue.
    ?assertMatch(#{count := 1}, maps:get(mod_global_distrib_outgoing_queue_time, M1)),
    ?assertMatch(#{count := 1, max := Max} when Max >= 0 andalso Max < 1000000,
                 maps:get(mod_global_distrib_incoming_queue_time, M1)),
    [mongoose_native_gd_transport:stop(T) || T <- [Dc1, Dc2]].

%% 100 connections per endpoint; ten senders with 100 stanzas each: every
%% sender's stanzas arrive in the order it sent them.
order_over_many_connections(_Config) ->
    Dc1 = dc(<<"dc1.test">>, #{connections_per_endpoint => 100}),
    Dc2 = dc(<<"dc2.test">>, #{}),
    link(Dc1, <<"dc2.test">>, Dc2),
    Senders = [spawn_link(fun() ->
                                  Key = integer_to_binary(S),
                                  [ok = mongoose_native_gd_transport:send(Dc1, <<"dc2.test">>, Key, {S, N})
                                   || N <- lists:seq(1, 100)]
                          end) || S <- lists:seq(1, 10)],
    Got = [got(5000) || _ <- lists:seq(1, 1000)],
    ?assertEqual(10, length(Senders)),
    [begin
         Seq = [N || {got, _, _, _, _, {S1, N}} <- Got, S1 =:= S],
         ?assertEqual(lists:seq(1, 100), Seq)
     end || S <- lists:seq(1, 10)],
    [mongoose_native_gd_transport:stop(T) || T <- [Dc1, Dc2]].

%% A peer written from CONTRACTS.md section 2 with gen_tcp.
library_reads_plain_erlang_frames(_Config) ->
    Dc2 = dc(<<"dc2.test">>, #{}),
    [{Ip, Port}] = mongoose_native_gd_transport:listening(Dc2),
    {ok, S} = gen_tcp:connect(binary_to_list(Ip), Port, [binary, {packet, 4}, {active, false}]),
    ok = gen_tcp:send(S, <<"<gd_start server='plain.erl' conn_id='c0ffee'/>">>),
    [begin
         Key = <<"carol@plain.erl">>,
         Bin = term_to_binary(stanza(N)),
         Clock = erlang:system_time(microsecond),
         ok = gen_tcp:send(S, <<Clock:64, (byte_size(Key)):16, Key/binary, Bin/binary>>)
     end || N <- [1, 2, 3]],
    [begin
         {got, _, <<"plain.erl">>, _, <<"carol@plain.erl">>, Term} = got(2000),
         ?assertEqual(stanza(N), Term)
     end || N <- [1, 2, 3]],
    gen_tcp:close(S),
    mongoose_native_gd_transport:stop(Dc2).

plain_erlang_reads_library_frames(_Config) ->
    Dc1 = dc(<<"dc1.test">>, #{}),
    {ok, L} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false}, {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    ok = mongoose_native_gd_transport:set_endpoints(Dc1, <<"plain.erl">>, [{{127, 0, 0, 1}, Port}]),
    ok = mongoose_native_gd_transport:send(Dc1, <<"plain.erl">>, <<"alice@dc1.test">>, stanza(7)),
    {ok, S} = gen_tcp:accept(L, 2000),
    {ok, Start} = gen_tcp:recv(S, 0, 2000),
    {match, [<<"dc1.test">>]} = re:run(Start, "^<gd_start server='([^']*)' conn_id='[^']+'/>$",
                                       [{capture, all_but_first, binary}]),
    {ok, <<Clock:64, KeyLen:16, Key:KeyLen/binary, Bin/binary>>} = gen_tcp:recv(S, 0, 2000),
    ?assertEqual(<<"alice@dc1.test">>, Key),
    ?assertEqual(stanza(7), binary_to_term(Bin, [safe])),
    ?assert(abs(erlang:system_time(microsecond) - Clock) < 5000000),
    gen_tcp:close(S),
    gen_tcp:close(L),
    mongoose_native_gd_transport:stop(Dc1).

%% Garbage, an oversized frame and a frame cut in half: each closes its own
%% connection and counts incoming_errored; the datacenter keeps working.
bad_peers_are_disconnected(_Config) ->
    Dc1 = dc(<<"dc1.test">>, #{}),
    Dc2 = dc(<<"dc2.test">>, #{max_frame_size => 1024}),
    [{Ip, Port}] = mongoose_native_gd_transport:listening(Dc2),
    Start = <<"<gd_start server='evil' conn_id='x'/>">>,
    Bad = [<<5:32, "hello">>,
           <<(byte_size(Start)):32, Start/binary, 5000:32, 0:80>>,
           <<(byte_size(Start)):32, Start/binary, 40:32, 1, 2, 3>>],
    [begin
         {ok, S} = gen_tcp:connect(binary_to_list(Ip), Port, [binary, {active, false}]),
         ok = gen_tcp:send(S, B),
         %% The server may close before this half-close: either way it closed.
         _ = gen_tcp:shutdown(S, write),
         ?assertMatch({error, E} when E =:= closed; E =:= econnreset, gen_tcp:recv(S, 0, 2000))
     end || B <- Bad],
    link(Dc1, <<"dc2.test">>, Dc2),
    ok = mongoose_native_gd_transport:send(Dc1, <<"dc2.test">>, <<"k">>, stanza(1)),
    {got, _, <<"dc1.test">>, _, _, _} = got(2000),
    %% Counted just after the socket closes: the peer may see the close first.
    ?assertEqual(3, errored_count(Dc2, 3, 20)),
    [mongoose_native_gd_transport:stop(T) || T <- [Dc1, Dc2]].

%% binary_to_term(Bin, [safe]): a term that would create atoms is dropped,
%% and the worker goes on.
unsafe_terms_are_dropped(_Config) ->
    Dc2 = dc(<<"dc2.test">>, #{}),
    [{Ip, Port}] = mongoose_native_gd_transport:listening(Dc2),
    {ok, S} = gen_tcp:connect(binary_to_list(Ip), Port, [binary, {packet, 4}, {active, false}]),
    ok = gen_tcp:send(S, <<"<gd_start server='plain.erl' conn_id='c'/>">>),
    %% An atom this node has never seen, in the external term format.
    NewAtom = <<"never_seen_atom_", (integer_to_binary(erlang:unique_integer([positive])))/binary>>,
    Unsafe = <<131, 119, (byte_size(NewAtom)), NewAtom/binary>>,
    Frame = fun(Bin) -> <<(erlang:system_time(microsecond)):64, 1:16, "k", Bin/binary>> end,
    ok = gen_tcp:send(S, Frame(Unsafe)),
    ok = gen_tcp:send(S, Frame(term_to_binary(after_unsafe))),
    {got, _, _, _, <<"k">>, after_unsafe} = got(2000),
    gen_tcp:close(S),
    mongoose_native_gd_transport:stop(Dc2).

unknown_host_fails_fast(_Config) ->
    Dc1 = dc(<<"dc1.test">>, #{}),
    ?assertMatch({error, {no_connection, _}},
                 mongoose_native_gd_transport:send(Dc1, <<"nowhere">>, <<"k">>, x)),
    ?assertEqual([], mongoose_native_gd_transport:endpoints(Dc1, <<"nowhere">>)),
    ?assertMatch({error, {invalid_config, <<"modules.mod_global_distrib.connections.endpoints[0]", _/binary>>}},
                 mongoose_native_gd_transport:start(#{local_host => <<"x">>, endpoints => [nope]},
                                                    fun(_, _, _, _) -> ok end, 1)),
    %% The TLS files are read on the runtime; a missing one is still named.
    NoFile = #{certfile => "/nonexistent/dc.pem", cacertfile => "/nonexistent/ca.pem"},
    {error, {invalid_config, Missing}} =
        mongoose_native_gd_transport:start(#{local_host => <<"x">>, endpoints => [], tls => NoFile},
                                           fun(_, _, _, _) -> ok end, 1),
    ?assertNotEqual(nomatch, binary:match(Missing, <<"/nonexistent/">>)),
    mongoose_native_gd_transport:stop(Dc1).

tls_links_and_refuses_wrong_certificates(Config) ->
    Certs = mn_test_certs:make(?config(priv_dir, Config)),
    Tls = fun(Cert) -> #{tls => #{certfile => maps:get(Cert, Certs),
                                  cacertfile => maps:get(ca, Certs)}} end,
    Dc1 = dc(<<"dc1.test">>, Tls(dc)),
    Dc2 = dc(<<"dc2.test">>, Tls(dc)),
    Rogue = dc(<<"rogue.test">>, Tls(rogue_dc)),
    link(Dc1, <<"dc2.test">>, Dc2),
    link(Rogue, <<"dc2.test">>, Dc2),
    ok = mongoose_native_gd_transport:send(Dc1, <<"dc2.test">>, <<"k">>, stanza(1)),
    {got, <<"dc2.test">>, <<"dc1.test">>, _, _, _} = got(3000),
    ok = mongoose_native_gd_transport:send(Rogue, <<"dc2.test">>, <<"k">>, stanza(2)),
    receive {got, _, <<"rogue.test">>, _, _, _} = G -> ct:fail({rogue_delivered, G})
    after 1000 -> ok
    end,
    %% Refused at every attempt (the rogue keeps retrying in the background).
    ?assert(maps:get(mod_global_distrib_incoming_errored_count,
                     mongoose_native_gd_transport:metrics(Dc2)) >= 1),
    [mongoose_native_gd_transport:stop(T) || T <- [Dc1, Dc2, Rogue]].

%% A worker that stops handling stanzas: the NIF stops reading for it once
%% 10,000 frames wait in its mailbox, TCP fills, the sender's queue fills
%% and send refuses; once the worker goes on, every accepted stanza
%% arrives, in order.
slow_worker_slows_its_senders(_Config) ->
    Self = self(),
    Handler = fun(_, _, _, {_, 1, _}) ->
                      Self ! {stuck, self()},
                      receive go_on -> Self ! {seq, 1} end;
                 (_, _, _, {_, N, _}) ->
                      Self ! {seq, N}
              end,
    {ok, Dc2} = mongoose_native_gd_transport:start(
                  #{local_host => <<"dc2.test">>, endpoints => [{"127.0.0.1", 0}]}, Handler, 1),
    Dc1 = dc(<<"dc1.test">>, #{queue_len => 1000}),
    link(Dc1, <<"dc2.test">>, Dc2),
    Pad = binary:copy(<<"p">>, 2048),
    Accepted = send_until_refused(Dc1, Pad, 1, 200000, 0),
    Worker = receive {stuck, W} -> W after 5000 -> ct:fail(worker_never_called) end,
    timer:sleep(500),
    {messages, Queued} = process_info(Worker, messages),
    Frames = lists:sum([length(Ps) || {gd_packets, _, _, _, Ps} <- Queued]),
    ct:log("accepted ~b stanzas, ~b frames wait for the worker", [Accepted, Frames]),
    ?assert(Accepted < 200000),
    %% The batch in the worker's hands (up to 512 frames) is not in its mailbox.
    ?assert(Frames >= 10000 - 512 andalso Frames =< 10000 + 512),
    Worker ! go_on,
    [receive {seq, N} -> ok after 10000 -> ct:fail({missing, N}) end
     || N <- lists:seq(1, Accepted)],
    receive {seq, _} = Extra -> ct:fail({unexpected, Extra}) after 200 -> ok end,
    [mongoose_native_gd_transport:stop(T) || T <- [Dc1, Dc2]].

%% Sends stanza N, N+1, ... retrying a refused one every millisecond; ends
%% when refused for 500 ms in a row: the number of stanzas accepted.
send_until_refused(_T, _Pad, N, Max, _) when N > Max ->
    Max;
send_until_refused(_T, _Pad, N, _Max, 500) ->
    N - 1;
send_until_refused(T, Pad, N, Max, Refused) ->
    case mongoose_native_gd_transport:send(T, <<"dc2.test">>, <<"alice@dc1">>, {s, N, Pad}) of
        ok -> send_until_refused(T, Pad, N + 1, Max, 0);
        {error, _} -> timer:sleep(1), send_until_refused(T, Pad, N, Max, Refused + 1)
    end.

%% The only worker is killed: its supervisor starts another, which tells
%% the NIF its pid, and stanzas arrive again.
killed_worker_is_replaced(_Config) ->
    Self = self(),
    Handler = fun(_, _, _, Term) -> Self ! {handled_by, self(), Term} end,
    {ok, Dc2} = mongoose_native_gd_transport:start(
                  #{local_host => <<"dc2.test">>, endpoints => [{"127.0.0.1", 0}]}, Handler, 1),
    Dc1 = dc(<<"dc1.test">>, #{}),
    link(Dc1, <<"dc2.test">>, Dc2),
    Send = fun(N) -> ok = mongoose_native_gd_transport:send(Dc1, <<"dc2.test">>, <<"k">>, N) end,
    Send(1),
    W1 = receive {handled_by, P1, 1} -> P1 after 5000 -> ct:fail(first_not_handled) end,
    exit(W1, kill),
    timer:sleep(100),
    Send(2),
    W2 = receive {handled_by, P2, 2} -> P2 after 5000 -> ct:fail(second_not_handled) end,
    ?assertNotEqual(W1, W2),
    [mongoose_native_gd_transport:stop(T) || T <- [Dc1, Dc2]].

%% Hostile peers on the listener (default max_frame_size, 16 MiB): 100 that
%% connect and send nothing, 50 that announce a frame just under the limit
%% and send four bytes of it, one announcing 4 GB, one sending its
%% gd_start and a frame a byte at a time, one flooding valid frames. The
%% node's memory grows by far less than the announced frames (800 MB), a
%% datacenter keeps being served meanwhile, the byte-at-a-time frame
%% arrives whole, and every bad connection is closed and counted (the
%% silent ones after the 5 s gd_start deadline).
hostile_peers(_Config) ->
    Dc1 = dc(<<"dc1.test">>, #{}),
    Dc2 = dc(<<"dc2.test">>, #{}),
    link(Dc1, <<"dc2.test">>, Dc2),
    [{Ip, Port}] = mongoose_native_gd_transport:listening(Dc2),
    Connect = fun() ->
                      {ok, S} = gen_tcp:connect(binary_to_list(Ip), Port, [binary, {active, false}]),
                      S
              end,
    Start = <<"<gd_start server='hostile.test' conn_id='h'/>">>,
    StartFrame = <<(byte_size(Start)):32, Start/binary>>,
    Frame = fun(Key, Term) ->
                    Bin = term_to_binary(Term),
                    Body = <<(erlang:system_time(microsecond)):64, (byte_size(Key)):16, Key/binary,
                             Bin/binary>>,
                    <<(byte_size(Body)):32, Body/binary>>
            end,
    Rss0 = rss_kb(),
    Silent = [Connect() || _ <- lists:seq(1, 100)],
    Announcing = [begin
                      S = Connect(),
                      ok = gen_tcp:send(S, <<(16 * 1024 * 1024 - 1):32, "abcd">>),
                      S
                  end || _ <- lists:seq(1, 50)],
    Huge = Connect(),
    ok = gen_tcp:send(Huge, <<16#FFFFFFFF:32>>),
    Trickle = spawn_link(fun() ->
                                 S = Connect(),
                                 [begin ok = gen_tcp:send(S, <<B>>), timer:sleep(2) end
                                  || <<B>> <= <<StartFrame/binary, (Frame(<<"t">>, trickled))/binary>>],
                                 receive stop -> gen_tcp:close(S) end
                         end),
    Flood = spawn_link(fun() ->
                               S = Connect(),
                               ok = gen_tcp:send(S, StartFrame),
                               F = Frame(<<"f">>, flood),
                               [ok = gen_tcp:send(S, F) || _ <- lists:seq(1, 20000)],
                               receive stop -> gen_tcp:close(S) end
                       end),
    %% The datacenter is served meanwhile.
    [ok = mongoose_native_gd_transport:send(Dc1, <<"dc2.test">>, <<"good">>, stanza(N))
     || N <- lists:seq(1, 100)],
    {Good, Trickled, Flooded} = count_arrivals(0, false, 0, erlang:monotonic_time(millisecond) + 20000),
    Rss1 = rss_kb(),
    ct:pal("memory with the hostile peers connected: ~b kB more (announced: ~b kB); "
           "good stanzas ~b, flood ~b, trickled ~p", [Rss1 - Rss0, 50 * 16 * 1024, Good,
                                                      Flooded, Trickled]),
    ?assertEqual(100, Good),
    ?assert(Trickled),
    ?assertEqual(20000, Flooded),
    ?assert(Rss1 - Rss0 < 100 * 1024),
    %% The silent and announcing ones are closed after the deadline, the
    %% 4 GB one at once; each is counted.
    [?assertMatch({error, E} when E =:= closed; E =:= econnreset, gen_tcp:recv(S, 0, 8000))
     || S <- [Huge | Silent ++ Announcing]],
    Errored = errored_count(Dc2, 151, 20),
    mn_test_results:row("hostile peers on the gd listener",
                        [{"silent", 100}, {"announcing 16 MiB", 50}, {"4 GB header", 1},
                         {"byte at a time", 1}, {"flood frames", 20000},
                         {"memory growth (kB)", Rss1 - Rss0},
                         {"good stanzas served", Good}, {"bad connections counted", Errored}]),
    ?assertEqual(151, Errored),
    [P ! stop || P <- [Trickle, Flood]],
    [mongoose_native_gd_transport:stop(T) || T <- [Dc1, Dc2]].

count_arrivals(Good, Trickled, Flooded, _Deadline)
  when Good =:= 100, Trickled, Flooded =:= 20000 ->
    {Good, Trickled, Flooded};
count_arrivals(Good, Trickled, Flooded, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {got, _, <<"dc1.test">>, _, <<"good">>, _} -> count_arrivals(Good + 1, Trickled, Flooded, Deadline);
        {got, _, <<"hostile.test">>, _, <<"t">>, trickled} -> count_arrivals(Good, true, Flooded, Deadline);
        {got, _, <<"hostile.test">>, _, <<"f">>, flood} -> count_arrivals(Good, Trickled, Flooded + 1, Deadline)
    after Left -> {Good, Trickled, Flooded}
    end.

%% This VM's resident memory, in kB.
rss_kb() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    {match, [Kb]} = re:run(Status, "VmRSS:\\s+(\\d+)", [{capture, all_but_first, binary}]),
    binary_to_integer(Kb).

%% incoming_errored_count once it reaches Expected (or after Tries tenths
%% of a second).
errored_count(T, Expected, Tries) ->
    N = maps:get(mod_global_distrib_incoming_errored_count, mongoose_native_gd_transport:metrics(T)),
    case N < Expected andalso Tries > 0 of
        true -> timer:sleep(100), errored_count(T, Expected, Tries - 1);
        false -> N
    end.
