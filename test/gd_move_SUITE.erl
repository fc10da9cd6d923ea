%% Issue 23: no message lost to a stale datacenter. Three datacenters as
%% peer nodes (dc1.test, dc2.test, dc3.test; global host example.test) on
%% one Redis (database 12, flushed first). A user moves from dc2 to dc3
%% while a sender on dc1 keeps writing to the bare JID. The old session on
%% dc2 is suspended (as with stream management): it keeps what it gets and
%% re-routes it from dc2 when it closes. Refreshes run only when a case
%% asks for them, so each case orders (or races) the old datacenter's
%% refresh, its late delete and re-route, and the new session's insert.
%%
%% Every move asserts: every message reaches the new session once, none is
%% answered with an error or left behind, and Redis ends at dc3.
-module(gd_move_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(DB, 12).
-define(GLOBAL, <<"example.test">>).
-define(DCS, [dc1, dc2, dc3]).
%% Moves per randomized case; three cases, so at least 200 in all.
-define(MOVES, 70).
%% Messages per move, sent in three batches around the move's steps.
-define(BATCH, 4).

all() ->
    [stale_entry_never_answers_error, stale_self_mapping_not_cached,
     vanished_entry_reclaimed, stock_reads_the_host,
     ordered_moves, concurrent_moves, vanished_moves].

suite() ->
    [{timetrap, {minutes, 10}}].

init_per_suite(Config) ->
    case node() of
        nonode@nohost ->
            _ = os:cmd("epmd -daemon"),
            {ok, _} = net_kernel:start([list_to_atom("gd_move_ct_" ++ os:getpid()), shortnames]);
        _ ->
            ok
    end,
    "OK" ++ _ = redis(["FLUSHDB"]),
    Ports = free_ports(length(?DCS)),
    Dcs = [start_dc(Dc, Port, ?config(priv_dir, Config)) || {Dc, Port} <- lists:zip(?DCS, Ports)],
    [{dcs, maps:from_list(Dcs)} | Config].

end_per_suite(Config) ->
    [catch peer:stop(Peer) || {_, #{peer := Peer}} <- maps:to_list(?config(dcs, Config))],
    ok.

start_dc(Dc, Port, LogDir) ->
    Cookie = atom_to_list(erlang:get_cookie()),
    {ok, Peer, Node} = peer:start(#{name => peer:random_name(atom_to_list(Dc)),
                                    args => ["-setcookie", Cookie, "-connect_all", "false",
                                             "-kernel", "prevent_overlapping_partitions",
                                             "false"]}),
    ok = erpc:call(Node, code, add_paths, [code:get_path()]),
    Log = filename:join(LogDir, atom_to_list(Dc) ++ ".log"),
    ok = erpc:call(Node, logger, add_handler, [gd_file, logger_std_h,
                                               #{config => #{file => Log}, level => warning}]),
    Opts = #{global_host => ?GLOBAL, local_host => local_host(Dc),
             connections => #{endpoints => [{"127.0.0.1", Port}], connections_per_endpoint => 2,
                              endpoint_refresh_interval => 1,
                              endpoint_refresh_interval_when_empty => 1},
             %% Refreshes only when a case runs one.
             redis => #{expire_after => 600, refresh_after => 300},
             %% Long enough for a wrong cached host to lose the next message.
             cache => #{jid_lifetime_seconds => 5, domain_lifetime_seconds => 5},
             bounce => #{resend_after_ms => 50, max_retries => 7}},
    ok = erpc:call(Node, gd_test_dc, start, [local_host(Dc), #{database => ?DB}, Opts], 60000),
    {Dc, #{peer => Peer, node => Node}}.

local_host(Dc) -> <<(atom_to_binary(Dc))/binary, ".test">>.

free_ports(N) ->
    Socks = [begin
                 {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
                 S
             end || _ <- lists:seq(1, N)],
    Ports = [element(2, inet:port(S)) || S <- Socks],
    [gen_tcp:close(S) || S <- Socks],
    Ports.

%% The sender, on dc1: errors answered to it come here tagged dc1.
init_per_testcase(_, Config) ->
    connect(dc1, <<"sender">>, <<"r">>, dc1, Config),
    [{stats, ets:new(gd_move_stats, [public, set])} | Config].

end_per_testcase(_, Config) ->
    rpc(dc1, gd_test_dc, disconnect, [<<"sender">>, <<"r">>], Config).

rpc(Dc, M, F, A, Config) ->
    #{node := N} = maps:get(Dc, ?config(dcs, Config)),
    erpc:call(N, M, F, A, 30000).

redis(Args) ->
    os:cmd(lists:flatten(["redis-cli -n ", integer_to_list(?DB) | [[" ", A] || A <- Args]])).

bare(User) -> <<User/binary, "@example.test">>.

%%--------------------------------------------------------------------
%% Sessions
%%--------------------------------------------------------------------

%% A session on Dc whose stanzas come to this process as
%% {stanza, Tag, Body, Type}.
connect(Dc, User, Resource, Tag, Config) ->
    connect_for(self(), Dc, User, Resource, Tag, Config).

connect_for(Parent, Dc, User, Resource, Tag, Config) ->
    Pid = spawn_link(fun() -> forward(Parent, Tag) end),
    ok = rpc(Dc, gd_test_dc, connect, [User, Resource, Pid], Config).

forward(Parent, Tag) ->
    receive
        {route, _From, _To, _Acc, Packet} ->
            Parent ! {stanza, Tag, gd_test_dc:body(Packet), type(Packet)},
            forward(Parent, Tag)
    end.

type({xmlel, _, Attrs, _}) -> proplists:get_value(<<"type">>, Attrs).

%% The suspended session: keeps what it gets. Close(Kept) ends the session
%% on Dc (sm_remove_connection_hook), then calls Kept() for what it kept,
%% including what reached it while it was closing, to route it again.
connect_suspended(Dc, User, Resource, Config) ->
    Pid = spawn_link(fun() -> suspended([]) end),
    ok = rpc(Dc, gd_test_dc, connect, [User, Resource, Pid], Config),
    Pid.

suspended(Kept) ->
    receive
        {route, F, T, A, P} -> suspended([{F, T, A, P} | Kept]);
        {kept, From} ->
            From ! {kept, self(), [gd_test_dc:body(P) || {_, _, _, P} <- Kept]},
            suspended(Kept);
        {close, Close, From} ->
            Close(fun() ->
                          %% A router that found the session just before it
                          %% ended still sends to it.
                          timer:sleep(20),
                          lists:reverse(drain(Kept))
                  end),
            From ! {closed, self()}
    end.

drain(Kept) ->
    receive {route, F, T, A, P} -> drain([{F, T, A, P} | Kept])
    after 0 -> Kept
    end.

%% The bodies the suspended session Pid holds so far, sorted.
kept(Pid) ->
    Pid ! {kept, self()},
    receive {kept, Pid, Bodies} -> lists:sort(Bodies) after 5000 -> ct:fail(kept_timeout) end.

close_suspended(Pid, Dc, User, Resource, Config) ->
    Close = fun(Kept) ->
                    ok = rpc(Dc, gd_test_dc, disconnect, [User, Resource], Config),
                    [rpc(Dc, mod_global_distrib_adapter, route, [F, T, A, P], Config)
                     || {F, T, A, P} <- Kept()]
            end,
    Pid ! {close, Close, self()},
    receive {closed, Pid} -> ok after 30000 -> ct:fail(close_timeout) end.

refresh(Dc, Config) ->
    {ok, _} = rpc(Dc, mod_global_distrib_mapping, refresh, [], Config),
    ok.

send(User, Bodies, Config) ->
    [ok = rpc(dc1, gd_test_dc, send, [{<<"sender">>, <<"r">>}, User, B], Config) || B <- Bodies],
    ok.

bodies(Move, Batch) ->
    [iolist_to_binary([integer_to_list(Move), $-, Batch, integer_to_list(I)])
     || I <- lists:seq(1, ?BATCH)].

%% Collects what arrives until every expected body came, or 8 s of quiet.
collect(Expected) ->
    collect(lists:sort(Expected), []).

collect(Expected, Got) ->
    case lists:sort([B || {_, B, _} <- Got]) of
        Expected -> settle(Got);
        _ ->
            receive {stanza, Tag, Body, Type} -> collect(Expected, [{Tag, Body, Type} | Got])
            after 8000 -> lists:reverse(Got)
            end
    end.

%% A short wait for anything extra (duplicates, late errors).
settle(Got) ->
    receive {stanza, Tag, Body, Type} -> settle([{Tag, Body, Type} | Got])
    after 150 -> lists:reverse(Got)
    end.

%% One move of User, the steps given by Steps(Ctx): asserts and counts.
move(N, Steps, Config) ->
    User = iolist_to_binary(["mover", integer_to_list(N)]),
    Old = connect_suspended(dc2, User, <<"old">>, Config),
    %% dc1 learns (and caches) dc2: its stanzas keep going there.
    wait_for(fun() -> rpc(dc1, mod_global_distrib_mapping, for_jid,
                          [{User, ?GLOBAL, <<>>}], Config) =:= {ok, <<"dc2.test">>} end),
    Ctx = #{user => User, old => Old, move => N, config => Config},
    Expected = Steps(Ctx),
    refresh(dc3, Config),
    Got = collect(Expected),
    Stats = ?config(stats, Config),
    Lost = length(Expected -- [B || {dc3, B, <<"chat">>} <- Got]),
    Errors = length([x || {_, _, <<"error">>} <- Got]),
    Misrouted = length([x || {Tag, _, _} <- Got, Tag =/= dc3]),
    Twice = length([B || {dc3, B, _} <- Got]) - length(lists:usort([B || {dc3, B, _} <- Got])),
    Redis = redis(["GET", binary_to_list(bare(User))]),
    ets:update_counter(Stats, totals, [{2, 1}, {3, length(Expected)}, {4, Lost}, {5, Errors},
                                       {6, Misrouted}, {7, Twice},
                                       {8, case Redis of "dc3.test\n" -> 0; _ -> 1 end}],
                       {totals, 0, 0, 0, 0, 0, 0, 0}),
    ?assertEqual({N, [], 0, "dc3.test\n"}, {N, Got -- [{dc3, B, <<"chat">>} || B <- Expected],
                                             Twice, Redis}),
    ok = rpc(dc3, gd_test_dc, disconnect, [User, <<"new">>], Config).

wait_for(F) ->
    wait_for(F, 5000).

wait_for(F, Ms) ->
    case F() of
        true -> ok;
        _ when Ms =< 0 -> ct:fail(condition_not_met);
        _ -> timer:sleep(20), wait_for(F, Ms - 20)
    end.

report(Name, Config) ->
    [{totals, Moves, Sent, Lost, Errors, Misrouted, Twice, NotDc3}] =
        ets:take(?config(stats, Config), totals),
    ct:pal("~p: ~p moves, ~p messages sent, ~p lost, ~p errors, ~p misrouted, ~p twice, "
           "~p moves ending off dc3", [Name, Moves, Sent, Lost, Errors, Misrouted, Twice, NotDc3]),
    {comment, io_lib:format("~p moves, ~p/~p delivered", [Moves, Sent - Lost, Sent])}.

%% Up to Max microseconds, busy-waiting (timer:sleep is milliseconds).
jitter(Max) ->
    Until = erlang:monotonic_time(microsecond) + rand:uniform(Max + 1) - 1,
    spin(Until).

spin(Until) ->
    case erlang:monotonic_time(microsecond) >= Until of
        true -> ok;
        false -> spin(Until)
    end.

%%--------------------------------------------------------------------
%% Each hole, step by step
%%--------------------------------------------------------------------

%% Hole 1 as the issue saw it: the old session closes and its entry goes;
%% a refresh that was in flight writes dc2 back (here: the write it made);
%% the re-routed stanzas read it; dc3's insert lands just after. They must
%% wait for dc3, not come back as errors. The old session holds them all
%% before it closes: one still on its way from dc1 could pass dc2's session
%% check just before the close and reach the router just after it (no
%% session: an error, as MongooseIM's router answers), which is not this
%% hole. On fresh connections (the suite's first move) they arrive just as
%% the close does.
stale_entry_never_answers_error(Config) ->
    Me = self(),
    move(0, fun(#{user := User, old := Old, move := N}) ->
                    A = bodies(N, "a"),
                    send(User, A, Config),
                    wait_for(fun() -> kept(Old) =:= lists:sort(A) end),
                    Close = fun(Kept) ->
                                    ok = rpc(dc2, gd_test_dc, disconnect, [User, <<"old">>], Config),
                                    "OK" ++ _ = redis(["SET", binary_to_list(bare(User)), "dc2.test"]),
                                    [rpc(dc2, mod_global_distrib_adapter, route, [F, T, Ac, P], Config)
                                     || {F, T, Ac, P} <- Kept()],
                                    timer:sleep(100),
                                    connect_for(Me, dc3, User, <<"new">>, dc3, Config)
                            end,
                    Old ! {close, Close, self()},
                    receive {closed, Old} -> ok end,
                    B = bodies(N, "b"),
                    send(User, B, Config),
                    A ++ B
            end, Config).

%% The old datacenter answered a lookup with itself after the session
%% left: that answer is not cached, so once the entry is right the next
%% stanza through dc2 goes to dc3.
stale_self_mapping_not_cached(Config) ->
    User = <<"cachy">>,
    connect(dc2, User, <<"old">>, dc2, Config),
    ok = rpc(dc2, gd_test_dc, disconnect, [User, <<"old">>], Config),
    "OK" ++ _ = redis(["SET", binary_to_list(bare(User)), "dc2.test"]),
    ?assertEqual({ok, <<"dc2.test">>},
                 rpc(dc2, mod_global_distrib_mapping, for_jid, [{User, ?GLOBAL, <<>>}], Config)),
    connect(dc3, User, <<"new">>, dc3, Config),
    ?assertEqual({ok, <<"dc3.test">>},
                 rpc(dc2, mod_global_distrib_mapping, for_jid, [{User, ?GLOBAL, <<>>}], Config)),
    ok = rpc(dc3, gd_test_dc, disconnect, [User, <<"new">>], Config).

%% Hole 2: the entries vanish mid-move; the stale datacenter refreshes
%% first and writes itself; dc3's refresh takes the entry back.
vanished_entry_reclaimed(Config) ->
    move(0, vanished_steps(fun(order) -> [dc2, dc3]; (_) -> ok end), Config).

vanished_steps(Jitter) ->
    fun(#{user := User, old := Old, move := N, config := Config}) ->
            A = bodies(N, "a"),
            send(User, A, Config),
            connect(dc3, User, <<"new">>, dc3, Config),
            Keys = [binary_to_list(K) || K <- [bare(User), <<(bare(User))/binary, "/old">>,
                                               <<(bare(User))/binary, "/new">>]],
            redis(["DEL" | ["'" ++ K ++ "'" || K <- Keys ++ ["{" ++ K ++ "}#owner" || K <- Keys]]]),
            Jitter(1),
            %% The stale datacenter first, or the new one.
            [begin refresh(Dc, Config), Jitter(2) end || Dc <- Jitter(order)],
            ?assertEqual("dc3.test\n", redis(["GET", binary_to_list(bare(User))])),
            B = bodies(N, "b"),
            send(User, B, Config),
            Jitter(3),
            close_suspended(Old, dc2, User, <<"old">>, Config),
            C = bodies(N, "c"),
            send(User, C, Config),
            A ++ B ++ C
    end.

%% A stock datacenter reads a session entry with a plain GET: the host.
stock_reads_the_host(Config) ->
    connect(dc3, <<"stocky">>, <<"r">>, dc3, Config),
    ?assertEqual("dc3.test\n", redis(["GET", "stocky@example.test"])),
    ?assertEqual("string\n", redis(["TYPE", "stocky@example.test"])),
    ?assertMatch([_Stamp, "dc3.test"],
                 string:lexemes(redis(["GET", "'{stocky@example.test}#owner'"]), " \n")),
    %% A stock datacenter's plain SET is left alone by our refreshes.
    "OK" ++ _ = redis(["SET", "stocky@example.test", "stock.test"]),
    refresh(dc3, Config),
    ?assertEqual("stock.test\n", redis(["GET", "stocky@example.test"])),
    ok = rpc(dc3, gd_test_dc, disconnect, [<<"stocky">>, <<"r">>], Config),
    ?assertEqual("stock.test\n", redis(["GET", "stocky@example.test"])).

%%--------------------------------------------------------------------
%% Many moves, randomized
%%--------------------------------------------------------------------

%% The old datacenter refreshes first and last; small random pauses.
ordered_moves(Config) ->
    [move(N, fun(#{user := User, old := Old}) ->
                     A = bodies(N, "a"),
                     send(User, A, Config),
                     refresh(dc2, Config),
                     jitter(2000),
                     connect(dc3, User, <<"new">>, dc3, Config),
                     jitter(2000),
                     refresh(dc2, Config),
                     B = bodies(N, "b"),
                     send(User, B, Config),
                     close_suspended(Old, dc2, User, <<"old">>, Config),
                     refresh(dc2, Config),
                     C = bodies(N, "c"),
                     send(User, C, Config),
                     A ++ B ++ C
             end, Config) || N <- lists:seq(1, ?MOVES)],
    report(ordered_moves, Config).

%% dc2's refreshes, its close (delete, then re-route) and dc3's insert
%% start together at random microsecond offsets, while dc1 sends.
concurrent_moves(Config) ->
    [move(N, fun(#{user := User, old := Old}) ->
                     A = bodies(N, "a"),
                     send(User, A, Config),
                     Me = self(),
                     Steps = [fun() -> refresh(dc2, Config) end,
                              fun() -> refresh(dc2, Config) end,
                              fun() -> close_suspended(Old, dc2, User, <<"old">>, Config) end,
                              fun() -> connect_for(Me, dc3, User, <<"new">>, dc3, Config) end,
                              fun() -> send(User, bodies(N, "b"), Config) end],
                     race(Steps),
                     refresh(dc2, Config),
                     C = bodies(N, "c"),
                     send(User, C, Config),
                     A ++ bodies(N, "b") ++ C
             end, Config) || N <- lists:seq(?MOVES + 1, 2 * ?MOVES)],
    report(concurrent_moves, Config).

%% Each step in a process of its own, started after up to 1.5 ms.
race(Steps) ->
    Parent = self(),
    Pids = [spawn_link(fun() ->
                               jitter(1500),
                               Step(),
                               Parent ! {done, self()}
                       end) || Step <- Steps],
    [receive {done, P} -> ok after 30000 -> ct:fail(race_timeout) end || P <- Pids],
    ok.

%% The keys vanish before either datacenter refreshes; who refreshes
%% first, and the pauses, are random.
vanished_moves(Config) ->
    Jitter = fun(order) -> lists:nthtail(rand:uniform(2) - 1, [dc3, dc2, dc3]);
                (_) -> jitter(2000)
             end,
    [move(N, vanished_steps(Jitter), Config) || N <- lists:seq(2 * ?MOVES + 1, 3 * ?MOVES)],
    report(vanished_moves, Config).
