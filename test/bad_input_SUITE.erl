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
    [secrets_stay_out_of_errors_logs_and_crashes, planted_passwords_of_every_type_stay_hidden,
     improper_lists_are_bad_requests,
     deep_nesting_is_a_bad_request, huge_requests_do_not_stall_schedulers,
     huge_generic_terms_do_not_stall_schedulers, requests_past_max_request_size_are_refused].

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

%% A unique password planted in every pool type, in pools that start (a
%% private Redis requiring it, PostgreSQL over trust, ODBC's connection
%% string) and in pools the server refuses (MariaDB, RabbitMQ, slapd, a
%% wrong Redis password, Elasticsearch and HTTP with nobody listening):
%% neither the start results, the calls' answers, stats/3, any log event,
%% the crash reports of processes that die on those results, nor
%% `sys:get_status' of every process of the application shows it.
planted_passwords_of_every_type_stay_hidden(_Config) ->
    C = "pw-" ++ integer_to_list(erlang:unique_integer([positive])) ++ "-planted",
    RedisPort = 6393,
    ok = mn_test_redis:start(RedisPort, ["--requirepass", C]),
    start_capture(),
    try
        Started = [{redis, #{port => RedisPort, password => C}},
                   {rdbms, #{driver => pgsql, host => "127.0.0.1", database => "test",
                             username => "postgres", password => C}},
                   {rdbms, #{driver => odbc,
                             settings => "DSN=mongoose_pgsql;PWD=" ++ C}}],
        Refused = [{redis, #{port => RedisPort, password => C ++ "x"}},
                   {rdbms, #{driver => mysql, host => "127.0.0.1", database => "test",
                             username => "root", password => C}},
                   {rabbit, #{host => "127.0.0.1", amqp_password => C}},
                   {rabbit, #{host => "127.0.0.1", password => C, username => "nobody"}},
                   {ldap, #{servers => ["127.0.0.1"], port => 3389,
                            rootdn => "cn=admin,dc=example,dc=com", password => C}},
                   {elastic, #{host => "127.0.0.1", port => 1, username => "u", password => C}},
                   {http, #{host => "http://u:" ++ C ++ "@127.0.0.1:1"}}],
        Shapes = lists:enumerate(Started ++ Refused),
        Results = [begin
                       {Us, R} = timer:tc(fun() -> start_in_process(Type, 100 + I, Conn) end),
                       ct:pal("~p start: ~p ms", [Type, Us div 1000]),
                       {Type, R}
                   end || {I, {Type, Conn}} <- Shapes],
        {Up, Down} = lists:split(length(Started), Results),
        [?assertMatch({_, {ok, _}}, R) || R <- Up],
        [?assertMatch({_, {error, _}}, R) || R <- Down],
        UpTags = [{Type, list_to_atom("shape" ++ integer_to_list(100 + I))}
                  || {I, {Type, _}} <- lists:sublist(Shapes, length(Started))],
        Answers = [mongoose_wpool:call(redis, global, shape101, {q, ["NO_SUCH_COMMAND", "x"]}),
                   mongoose_rdbms:sql_query(global, shape102, <<"SELECT no_such_column">>),
                   mongoose_rdbms:sql_query(global, shape103, <<"SELECT no_such_column">>)],
        Stats = [mongoose_wpool:stats(Type, global, Tag) || {Type, Tag} <- UpTags]
            ++ [mongoose_wpool:get_pools()]
            ++ [mongoose_wpool:get_pool_settings(Type, global, Tag) || {Type, Tag} <- UpTags],
        Statuses = app_statuses(),
        ?assert(length(Statuses) > 0),
        timer:sleep(300),
        Logged = stop_capture(),
        Seen = iolist_to_binary(io_lib:format("~p~n~p~n~p~n~p~n~p",
                                              [Results, Answers, Stats, Statuses, Logged])),
        ct:pal("~b start results, ~b answers, ~b stats, ~b process states, ~b log events "
               "searched for the planted password", [length(Results), length(Answers),
                                                      length(Stats), length(Statuses),
                                                      length(Logged)]),
        Found = binary:matches(Seen, list_to_binary(C)),
        [ct:pal("the planted password, seen here: ~s",
                [binary:part(Seen, max(0, At - 300), min(400, byte_size(Seen) - max(0, At - 300)))])
         || {At, _} <- Found],
        mn_test_results:row("secrets: a planted password in every pool type",
                            [{"pools", length(Results)}, {"log events", length(Logged)},
                             {"process states", length(Statuses)},
                             {"bytes searched", byte_size(Seen)},
                             {"occurrences", length(Found)}]),
        ?assertEqual([], Found)
    after
        _ = logger:remove_handler(?HANDLER),
        mn_test_redis:stop(RedisPort)
    end.

%% sys:get_status of every process of the application that answers it.
app_statuses() ->
    Procs = [P || P <- processes(),
                  {ok, mongoose_native} =:= application:get_application(P)],
    [S || P <- Procs, {ok, S} <- [catch_status(P)]].

catch_status(P) ->
    try {ok, sys:get_status(P, 1000)}
    catch _:_ -> none
    end.

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

%% A 1,000,000-argument DEL is decoded on a dirty scheduler: an unrelated
%% process's 2 ms wake-ups stay on time while it is submitted and answered.
%% It runs in a node whose schedulers do not busy-wait (+sbwt none for the
%% normal and dirty ones): on this project's 2-vCPU machines, spinning
%% schedulers beside a CPU-bound dirty scheduler starve the probe for
%% ~140 ms whatever the work is, which is the VM's tuning, not the NIF.
%% A 200,000-command pipeline takes the same path and is answered in full.
huge_requests_do_not_stall_schedulers(_Config) ->
    {ok, Peer, _} = peer:start(#{connection => standard_io,
                                 args => ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]}),
    try
        ok = peer:call(Peer, code, add_paths, [code:get_path()]),
        {P99, Max, Count, Done} = peer:call(Peer, ?MODULE, huge_requests_beside_probe, [], 60000),
        ct:pal("scheduling lateness beside the 1,000,000-argument DEL (~p wake-ups): "
               "p99 ~p us, max ~p us", [Count, P99, Max]),
        ?assertEqual({{ok, <<"1">>}, 200000, {ok, <<"200000">>}}, Done),
        %% Decoding it on a normal scheduler made a wake-up 105-150 ms
        %% late. Decoded on a dirty one, p99 is 1.4-2.8 ms on a quiet
        %% 2-vCPU machine, and 3-5 ms (max 9 ms) beside two CPU hogs: the
        %% dirty scheduler's CPU-bound decode shares the two vCPUs with the
        %% probe. The bounds leave the machine's noise room and still sit
        %% at half the defect's lateness.
        ?assert(Count >= 50),
        ?assert(P99 < 25000 andalso Max < 50000, {p99, P99, max, Max})
    after
        peer:stop(Peer)
    end.

%% In the peer: the requests are built first, by a caller with a heap large
%% enough not to collect garbage meanwhile (collecting a heap that size takes
%% a scheduler for 100 ms, whoever's data it is); the probe runs while the
%% DEL is submitted and answered.
huge_requests_beside_probe() ->
    ok = mongoose_wpool:ensure_started(),
    {ok, _} = mongoose_wpool:start(redis, global, default, [{workers, 2}], #{database => 5}),
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
                     Self ! deleted,
                     Replies = mongoose_wpool:call(redis, global, default, {qp, Pipeline}),
                     Self ! {done, Del, length(Replies), lists:last(Replies)}
             end,
    {Pid, _} = spawn_opt(Caller, [link, monitor, {min_heap_size, 20000000}]),
    receive {ready, Pid} -> ok after 30000 -> error(caller_not_ready) end,
    Probe = mn_test_probe:start(),
    Pid ! go,
    receive deleted -> ok after 30000 -> error(caller_stuck) end,
    {P99, Max, Count} = mn_test_probe:stop(Probe),
    Done = receive {done, D, N, Last} -> {D, N, Last} after 30000 -> error(caller_stuck) end,
    {ok, _} = q(["DEL", "huge:n"]),
    {P99, Max, Count, Done}.

%% A generic pool keeps its requests and results as they are, and copying
%% one takes as long as decoding it would (6.5 ms per million list cells
%% here, on the scheduler that called): both are measured first and the
%% large ones copied on a dirty scheduler. The peer has one scheduler, so a
%% copy on it held up the probe for its whole length (max 56-64 ms before,
%% 1.4-4.4 ms since).
huge_generic_terms_do_not_stall_schedulers(_Config) ->
    {ok, Peer, _} = peer:start(#{connection => standard_io,
                                 args => ["+S", "1", "+sbwt", "none", "+sbwtdcpu", "none",
                                          "+sbwtdio", "none"]}),
    try
        ok = peer:call(Peer, code, add_paths, [code:get_path()]),
        {{P99, Max, Count}, Answers} =
            peer:call(Peer, ?MODULE, huge_generic_beside_probe, [], 60000),
        ct:pal("scheduling lateness beside a 3,000,000-cell generic request and result "
               "(~p wake-ups): p99 ~p us, max ~p us", [Count, P99, Max]),
        ?assertEqual({true, 3000000}, Answers),
        ?assert(Count >= 10),
        ?assert(Max < 20000, {p99, P99, max, Max})
    after
        peer:stop(Peer)
    end.

%% In the peer: the list sits in the literal area, so neither the caller nor
%% the worker copies or collects it; only the library's copies could stall.
huge_generic_beside_probe() ->
    ok = mongoose_wpool:ensure_started(),
    {ok, _} = mongoose_wpool:start(generic, global, huge, [{workers, 1}]),
    persistent_term:put(?MODULE, lists:seq(1, 3000000)),
    Big = persistent_term:get(?MODULE),
    Probe = mn_test_probe:start(),
    timer:sleep(20),
    IsList = mongoose_wpool:call(generic, global, huge, {erlang, is_list, [Big]}),
    Back = mongoose_wpool:call(generic, global, huge, {persistent_term, get, [?MODULE]}),
    timer:sleep(20),
    Lateness = mn_test_probe:stop(Probe),
    Answers = {IsList, length(Back)},
    persistent_term:erase(?MODULE),
    {Lateness, Answers}.

requests_past_max_request_size_are_refused(_Config) ->
    Big = binary:copy(<<0>>, 129 * 1024 * 1024),
    {error, {bad_request, Msg}} = q(["SET", "big", Big]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"max_request_size">>)),
    ?assertMatch({error, {bad_request, _}},
                 mongoose_wpool:cast(redis, global, default, {q, ["SET", "big", Big]})),
    ?assertEqual({ok, <<"PONG">>}, q(["PING"])),
    %% A generic pool's request, kept as it is, counts the same way.
    {ok, _} = mongoose_wpool:start(generic, global, big, [{workers, 1}]),
    {error, {bad_request, GenericMsg}} =
        mongoose_wpool:call(generic, global, big, {erlang, byte_size, [Big]}),
    ?assertNotEqual(nomatch, binary:match(GenericMsg, <<"max_request_size">>)),
    ?assertEqual(3, mongoose_wpool:call(generic, global, big, {erlang, byte_size, [<<"abc">>]})).

%%--------------------------------------------------------------------

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
