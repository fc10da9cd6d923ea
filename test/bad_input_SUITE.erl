%% Bad input through the kept APIs: secrets under malformed configuration
%% shapes never reach a result, a log line or a crash report; improper lists
%% and deep nesting are refused without a panic; huge requests neither stall
%% a scheduler nor get past max_request_size.
-module(bad_input_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(CANARY, "S3cr3t-canary-42").
-define(HANDLER, bad_input_capture).

all() ->
    [secrets_stay_out_of_errors_logs_and_crashes, improper_lists_are_bad_requests,
     deep_nesting_is_a_bad_request, huge_requests_do_not_stall_schedulers,
     requests_past_max_request_size_are_refused].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_, Config) ->
    {ok, _} = mongoose_wpool:start(redis, global, default, [{workers, 2}], #{database => 5}),
    Config.

end_per_testcase(_, _Config) ->
    _ = logger:remove_handler(?HANDLER),
    mongoose_wpool:stop(),
    ok.

q(Cmd) -> mongoose_wpool:call(redis, global, default, {q, Cmd}).

%%--------------------------------------------------------------------

%% Every shape a password can be caught in: the start result, every log
%% event (the NIF's relayed warnings included) and the crash report of a
%% process that dies on the result name the problem without the password.
secrets_stay_out_of_errors_logs_and_crashes(_Config) ->
    start_capture(),
    C = ?CANARY,
    Url = "pgsql://user:" ++ C ++ "@127.0.0.1/test",
    Shapes = [{redis, {password, C}},
              {redis, [{password, C}, junk]},
              {redis, [{password, C} | junk]},
              {redis, #{password => C, 1 => 2}},
              {redis, #{password => {C}}},
              {redis, #{port => "6379", password => C}},
              {redis, #{tls => [{password, C}, junk]}},
              {rdbms, {pgsql, "127.0.0.1", 5432, "test", "postgres", C}},
              {rdbms, #{server => Url}},
              {rdbms, [{server, Url}]},
              {rdbms, #{server => {pgsql, "127.0.0.1", "5432", "test", "postgres", C}}},
              {rdbms, #{driver => pgsql, host => "127.0.0.1", database => "test",
                        username => "postgres", password => C, port => {C}}},
              {http, #{host => "http://user:" ++ C ++ "@127.0.0.1:1"}},
              {http, #{host => "http://127.0.0.1:1", password => C}}],
    Results = [start_in_process(Type, I, Conn)
               || {I, {Type, Conn}} <- lists:enumerate(Shapes)],
    %% Each shape is refused with the path it is at.
    [?assertMatch({error, {invalid_config, <<"outgoing_pools.", _/binary>>}}, R)
     || R <- Results],
    timer:sleep(200),
    Logged = stop_capture(),
    ?assert(length(Logged) >= length(Shapes)),
    Seen = iolist_to_binary(io_lib:format("~p~n~p", [Results, Logged])),
    ?assertEqual(nomatch, binary:match(Seen, list_to_binary(C))),
    %% The redacted descriptions still say what was found.
    ?assertNotEqual(nomatch, binary:match(Seen, <<"{password,<secret>}">>)),
    ?assertNotEqual(nomatch, binary:match(Seen, <<"pgsql://<secret>@127.0.0.1/test">>)).

%% Starts a pool from a process that crashes on anything but `{ok, _}', as a
%% supervisor child would; returns the start result.
start_in_process(Type, I, Conn) ->
    Self = self(),
    Tag = list_to_atom("shape" ++ integer_to_list(I)),
    Pid = proc_lib:spawn(fun() ->
                                 R = mongoose_wpool:start(Type, global, Tag, [{workers, 1}], Conn),
                                 Self ! {started, self(), R},
                                 {ok, _} = R
                         end),
    receive {started, Pid, R} -> R after 10000 -> ct:fail({start_stuck, Type, I}) end.

improper_lists_are_bad_requests(_Config) ->
    Refused = [q([<<"GET">> | bad_tail]),
               q(["SET", [<<"k">> | <<"v">>], 1]),
               mongoose_wpool:call(redis, global, default, {qp, [["PING"] | tail]}),
               mongoose_wpool:call(redis, global, default, [{q, ["PING"]} | tail])],
    [?assertMatch({error, {bad_request, <<"request: improper lists", _/binary>>}}, R)
     || R <- Refused],
    ?assertMatch({error, {invalid_config, _}},
                 mongoose_wpool:start(redis, global, improper, [{workers, 1}],
                                      [{database, 5} | junk])),
    ?assertMatch({error, {invalid_config, _}},
                 mongoose_wpool:start(redis, global, improper, [{workers, 1} | junk], #{})),
    %% The pool and the NIF carry on.
    ?assertEqual({ok, <<"PONG">>}, q(["PING"])).

deep_nesting_is_a_bad_request(_Config) ->
    Deep = lists:foldl(fun(_, Acc) -> [Acc] end, <<"x">>, lists:seq(1, 1000)),
    ?assertMatch({error, {bad_request, <<"request: term nested too deeply">>}},
                 q(["SET", "deep", Deep])),
    ?assertEqual({ok, <<"PONG">>}, q(["PING"])).

%% A 1,000,000-argument DEL and a 200,000-command pipeline are decoded on a
%% dirty scheduler: an unrelated process's 2 ms wake-ups stay on time while
%% they are submitted and answered. The caller builds its requests first and
%% has a heap large enough not to collect garbage meanwhile: collecting a
%% heap that size takes a scheduler for 100 ms, whoever's the data is.
huge_requests_do_not_stall_schedulers(_Config) ->
    {ok, <<"OK">>} = q(["SET", <<"huge:7">>, "x"]),
    {ok, _} = q(["DEL", "huge:n"]),
    Self = self(),
    Caller = fun() ->
                     Keys = [<<"huge:", (integer_to_binary(I))/binary>>
                             || I <- lists:seq(1, 1000000)],
                     Pipeline = [["INCR", "huge:n"] || _ <- lists:seq(1, 200000)],
                     Self ! {ready, self()},
                     receive go -> ok end,
                     Del = q(["DEL" | Keys]),
                     Replies = mongoose_wpool:call(redis, global, default, {qp, Pipeline}),
                     Self ! {done, Del, length(Replies), lists:last(Replies)}
             end,
    {Pid, _} = spawn_opt(Caller, [link, monitor, {min_heap_size, 20000000}]),
    receive {ready, Pid} -> ok after 30000 -> ct:fail(caller_not_ready) end,
    Probe = spawn_link(fun() -> probe(Self, []) end),
    Pid ! go,
    Done = receive {done, _, _, _} = D -> D after 30000 -> ct:fail(caller_stuck) end,
    Probe ! stop,
    Lateness = receive {probe, L} -> lists:sort(L) after 5000 -> ct:fail(probe_stuck) end,
    ?assertEqual({done, {ok, <<"1">>}, 200000, {ok, <<"200000">>}}, Done),
    P99 = lists:nth(length(Lateness) * 99 div 100, Lateness),
    Max = lists:last(Lateness),
    ct:pal("scheduling lateness beside the huge requests (~p wake-ups): p99 ~p us, max ~p us",
           [length(Lateness), P99, Max]),
    %% The same bounds as redis_SUITE's probe: decoding a million arguments
    %% on a normal scheduler came 105-150 ms late.
    ?assert(length(Lateness) >= 50),
    ?assert(P99 < 5000),
    ?assert(Max < 20000),
    {ok, _} = q(["DEL", "huge:n"]).

requests_past_max_request_size_are_refused(_Config) ->
    Big = binary:copy(<<0>>, 129 * 1024 * 1024),
    {error, {bad_request, Msg}} = q(["SET", "big", Big]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"max_request_size">>)),
    ?assertMatch({error, {bad_request, _}},
                 mongoose_wpool:cast(redis, global, default, {q, ["SET", "big", Big]})),
    ?assertEqual({ok, <<"PONG">>}, q(["PING"])).

%%--------------------------------------------------------------------

%% How late wake-ups of 2 ms come, in microseconds, until told to stop.
probe(Parent, Acc) ->
    T0 = erlang:monotonic_time(microsecond),
    receive
        stop -> Parent ! {probe, Acc}
    after 2 ->
        probe(Parent, [erlang:monotonic_time(microsecond) - T0 - 2000 | Acc])
    end.

start_capture() ->
    Self = self(),
    ok = logger:add_handler(?HANDLER, ?MODULE, #{level => all, config => #{pid => Self}}),
    ok.

stop_capture() ->
    ok = logger:remove_handler(?HANDLER),
    collect([]).

collect(Acc) ->
    receive {logged, Event} -> collect([Event | Acc])
    after 0 -> lists:reverse(Acc)
    end.

%% logger handler callback: every event, formatted as a reader would see it.
log(#{msg := Msg, meta := Meta}, #{config := #{pid := Pid}}) ->
    Text = case Msg of
               {string, S} -> S;
               {report, R} -> io_lib:format("~p", [R]);
               {Format, Args} -> io_lib:format(Format, Args)
           end,
    Pid ! {logged, iolist_to_binary(io_lib:format("~ts ~p", [Text, Meta]))}.
