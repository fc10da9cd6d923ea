%% The cassandra pool type and mongoose_cassandra, through the NIF, against
%% test/servers/cql_server.py: no Cassandra can run here, so a test server
%% speaking the CQL native protocol v4 stands in. The DataStax Python driver
%% (cassandra-driver, in the virtualenv scripts/setup.sh makes) checks that
%% server in independent_client_passes. The suite is also the callback
%% module of the queries (prepared_queries/0), written as MongooseIM's MAM
%% module writes its own.
-module(cassandra_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(POOL, default).
-define(ALICE, {jid, <<"alice">>, <<"localhost">>, <<"res">>}).

all() ->
    [{group, api}, {group, faults}, {group, auth}, {group, tls}, {group, start}].

groups() ->
    [{api, [], [independent_client_passes, connect_reads_known_queries_only,
                write_then_read_mam_messages, values_of_each_type, foldl_pages_the_result,
                write_async_lands, test_and_count_queries, stats_show_the_session,
                bad_requests_are_refused, server_errors_are_answered,
                stopped_pool_closes_its_connections]},
     {faults, [], [writes_go_in_batches_of_20, batch_too_large_is_halved,
                   write_timeout_is_retried, read_timeout_is_retried,
                   overloaded_is_not_retried, dropped_connection_then_recovery,
                   stalled_request_times_out, killed_connections_come_back]},
     {auth, [], [good_credentials, bad_credentials, missing_credentials]},
     {tls, [], [tls_with_the_test_ca, tls_with_another_ca, tls_legacy_ssl_options]},
     {start, [], [server_that_never_answers, nothing_listening, unknown_keyspace,
                  config_errors]}].

%% MongooseIM's mod_mam_cassandra_arch queries (a few), and a table of types.
prepared_queries() ->
    [{insert_query, "INSERT INTO mam_message (id, user_jid, from_jid, remote_jid, with_jid, message) "
                    "VALUES (?, ?, ?, ?, ?, ?)"},
     {{extract_messages_query, start_end},
      "SELECT id, from_jid, message FROM mam_message WHERE user_jid = ? AND with_jid = ? "
      "AND id >= :start_id AND id <= :end_id ORDER BY id LIMIT ?"},
     {{extract_messages_r_query, all},
      "SELECT id, from_jid, message FROM mam_message WHERE user_jid = ? AND with_jid = ? "
      "ORDER BY id DESC LIMIT ?"},
     {{calc_count_query, all},
      "SELECT COUNT(*) FROM mam_message WHERE user_jid = ? AND with_jid = ?"},
     {fetch_user_messages_query,
      "SELECT id, from_jid, message FROM mam_message WHERE user_jid = ? AND with_jid = ? ORDER BY id"},
     {select_for_removal_query,
      "SELECT DISTINCT user_jid, with_jid FROM mam_message WHERE user_jid = ?"},
     {remove_archive_query, "DELETE FROM mam_message WHERE user_jid = ? AND with_jid = ?"},
     {insert_typed, "INSERT INTO typed (k, n, big, ts, flag, id, tags, attrs, d, note) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"},
     {select_typed, "SELECT k, n, big, ts, flag, id, tags, attrs, d, note FROM typed WHERE k = ?"},
     {missing_table, "SELECT * FROM nope WHERE k = ?"}].

schema() ->
    ["CREATE TABLE mongooseim.mam_message (id bigint, user_jid varchar, from_jid varchar, "
     "remote_jid varchar, with_jid varchar, message blob, "
     "PRIMARY KEY ((user_jid, with_jid), id)) WITH CLUSTERING ORDER BY (id DESC)",
     "CREATE TABLE mongooseim.mam_muc_message (id bigint, room_jid varchar, from_jid varchar, "
     "nick_name varchar, with_nick varchar, message blob, "
     "PRIMARY KEY ((room_jid, with_nick), id)) WITH CLUSTERING ORDER BY (id DESC)",
     "CREATE TABLE mongooseim.mam_config (user_jid varchar, remote_jid varchar, behaviour varchar, "
     "PRIMARY KEY ((user_jid), remote_jid))",
     "CREATE TABLE mongooseim.typed (k text, n int, big bigint, ts timestamp, flag boolean, "
     "id uuid, tags set<text>, attrs map<text, int>, d double, note text, PRIMARY KEY ((k), n))"].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    mn_test_venv:python(),
    Schema = filename:join(?config(priv_dir, Config), "schema.cql"),
    ok = file:write_file(Schema, lists:join("\n", schema())),
    [{schema, Schema}, {certs, mn_test_certs:make(?config(priv_dir, Config))}
     | Config].

end_per_suite(_Config) -> ok.

init_per_group(auth, Config) ->
    [{server, start_server(Config, ["--username", "cassandra", "--password", secret()])} | Config];
init_per_group(tls, Config) ->
    #{server := Cert, server_key := Key} = ?config(certs, Config),
    [{server, start_server(Config, ["--certfile", Cert, "--keyfile", Key])} | Config];
init_per_group(_, Config) ->
    [{server, start_server(Config, [])} | Config].

end_per_group(_, Config) ->
    stop_server(?config(server, Config)).

init_per_testcase(Case, Config) ->
    control(Config, "reset"),
    case lists:member(Case, no_pool_cases()) of
        true -> ok;
        false -> {ok, _} = start_pool(Config, [], #{})
    end,
    Config.

end_per_testcase(_, Config) ->
    mongoose_wpool:stop(),
    control(Config, "reset"),
    ok.

no_pool_cases() ->
    [independent_client_passes, stalled_request_times_out, good_credentials, bad_credentials,
     missing_credentials, tls_with_the_test_ca, tls_with_another_ca, tls_legacy_ssl_options,
     server_that_never_answers, nothing_listening, unknown_keyspace, config_errors].

secret() -> "canary-s3cret".

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% Faults are set through the server's control port (control/2).
start_server(Config, Args) ->
    mn_test_venv:start_server("cql_server.py",
                              ["--keyspace", "mongooseim", "--schema", ?config(schema, Config)
                               | Args],
                              [port, control]).

stop_server(Server) ->
    mn_test_venv:stop_server(Server).

port_of(Config) -> maps:get(port, ?config(server, Config)).

start_pool(Config, PoolOpts, ConnOpts) ->
    start_pool_at(port_of(Config), PoolOpts, ConnOpts).

start_pool_at(Port, PoolOpts, ConnOpts) ->
    mongoose_wpool:start(cassandra, global, ?POOL, PoolOpts,
                         maps:merge(#{servers => [#{host => "127.0.0.1", port => Port}]},
                                    ConnOpts)).

%% One command on the server's control port; its one-line answer.
control(Config, Command) ->
    #{control := Port} = ?config(server, Config),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {packet, line}, {active, false}]),
    ok = gen_tcp:send(S, [Command, "\n"]),
    {ok, Answer} = gen_tcp:recv(S, 0, 5000),
    gen_tcp:close(S),
    binary_to_list(string:trim(Answer)).

server_stats(Config) ->
    json_decode(list_to_binary(control(Config, "stats"))).

%% OTP 25 has no json module; the control port's JSON is flat enough.
json_decode(Bin) ->
    {ok, Tokens, _} = erl_scan:string(json_to_erl(binary_to_list(Bin)) ++ "."),
    {ok, Term} = erl_parse:parse_term(Tokens),
    Term.

json_to_erl(S) ->
    %% {"a": 1, "b": [1, 2], "c": ["q"]} -> #{"a" => 1, ...}
    lists:flatten(string:replace(string:replace(string:replace(S, "{", "#{", all), ": ", " => ", all),
                                 "null", "undefined", all)).

stat(Config, Name) ->
    maps:get(Name, server_stats(Config)).

msg(Id, With) ->
    #{id => Id, user_jid => <<"alice@localhost">>, from_jid => <<"alice@localhost/res">>,
      remote_jid => With, with_jid => With, message => <<"<message>", (integer_to_binary(Id))/binary, "</message>">>}.

write_msgs(Ids, With) ->
    mongoose_cassandra:cql_write(?POOL, ?ALICE, ?MODULE, insert_query, [msg(I, With) || I <- Ids]).

all_ids(With) ->
    {ok, Rows} = mongoose_cassandra:cql_read(?POOL, ?ALICE, ?MODULE, fetch_user_messages_query,
                                             #{user_jid => <<"alice@localhost">>, with_jid => With}),
    [Id || #{id := Id} <- Rows].

%%--------------------------------------------------------------------
%% The API
%%--------------------------------------------------------------------

independent_client_passes(Config) ->
    mn_test_venv:client_passes("cql_client_check.py",
                               ["127.0.0.1", integer_to_list(port_of(Config))]).

%% Every query the scylla crate sent at connect (system.local, system.peers,
%% system_schema, USE) was understood by the test server.
connect_reads_known_queries_only(Config) ->
    ok = write_msgs([1], <<"bob@localhost">>),
    Stats = server_stats(Config),
    ct:log("server stats: ~p", [Stats]),
    ?assertEqual([], maps:get("unknown", Stats)),
    ?assert(maps:get("prepares", Stats) >= 1).

write_then_read_mam_messages(_Config) ->
    With = <<"bob@localhost">>,
    ?assertEqual(ok, write_msgs(lists:seq(1, 30), With)),
    %% The table is clustered by id descending; the query orders by id.
    ?assertEqual(lists:seq(1, 30), all_ids(With)),
    Params = #{user_jid => <<"alice@localhost">>, with_jid => With,
               start_id => 5, end_id => 9, '[limit]' => 3},
    {ok, Rows} = mongoose_cassandra:cql_read(?POOL, ?ALICE, ?MODULE,
                                             {extract_messages_query, start_end}, Params),
    ?assertEqual([#{id => 5, from_jid => <<"alice@localhost/res">>, message => <<"<message>5</message>">>},
                  #{id => 6, from_jid => <<"alice@localhost/res">>, message => <<"<message>6</message>">>},
                  #{id => 7, from_jid => <<"alice@localhost/res">>, message => <<"<message>7</message>">>}],
                 Rows),
    %% A proplist works as parameters too.
    {ok, Last} = mongoose_cassandra:cql_read(?POOL, ?ALICE, ?MODULE, {extract_messages_r_query, all},
                                             [{user_jid, <<"alice@localhost">>}, {with_jid, With},
                                              {'[limit]', 2}]),
    ?assertEqual([30, 29], [Id || #{id := Id} <- Last]),
    ?assertEqual({ok, [#{count => 30}]},
                 mongoose_cassandra:cql_read(?POOL, undefined, ?MODULE, {calc_count_query, all},
                                             #{user_jid => <<"alice@localhost">>, with_jid => With})),
    %% remove_archive as MongooseIM does it: fold over the partitions, delete each.
    ok = write_msgs([1], <<>>),
    Delete = fun(Page, Acc) ->
                     [ok = mongoose_cassandra:cql_write(?POOL, ?ALICE, ?MODULE, remove_archive_query, [Row])
                      || Row <- Page],
                     Acc + length(Page)
             end,
    ?assertEqual({ok, 2}, mongoose_cassandra:cql_foldl(?POOL, ?ALICE, ?MODULE, select_for_removal_query,
                                                       #{user_jid => <<"alice@localhost">>}, Delete, 0)),
    ?assertEqual([], all_ids(With)),
    ?assertEqual([], all_ids(<<>>)).

values_of_each_type(_Config) ->
    Uuid = <<1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16>>,
    Rows = [#{k => <<"key">>, n => 1, big => 1 bsl 40, ts => 1700000000123, flag => true, id => Uuid,
              tags => [<<"a">>, <<"b">>], attrs => #{<<"x">> => 1}, d => 1.5, note => null},
            [{k, "key"}, {n, 2}, {big, -5}, {ts, 0}, {flag, false},
             {id, "01020304-0506-0708-090a-0b0c0d0e0f10"}, {tags, []}, {attrs, [{<<"y">>, 2}]},
             {d, 2}, {note, 'an atom'}]],
    ?assertEqual(ok, mongoose_cassandra:cql_write(?POOL, undefined, ?MODULE, insert_typed, Rows)),
    {ok, Read} = mongoose_cassandra:cql_read(?POOL, undefined, ?MODULE, select_typed, #{k => <<"key">>}),
    ?assertEqual([#{k => <<"key">>, n => 1, big => 1 bsl 40, ts => 1700000000123, flag => true,
                    id => Uuid, tags => [<<"a">>, <<"b">>], attrs => #{<<"x">> => 1}, d => 1.5,
                    note => null},
                  %% An empty collection is null in Cassandra.
                  #{k => <<"key">>, n => 2, big => -5, ts => 0, flag => false, id => Uuid,
                    tags => null, attrs => #{<<"y">> => 2}, d => 2.0, note => <<"an atom">>}],
                 Read).

foldl_pages_the_result(Config) ->
    With = <<"carol@localhost">>,
    ok = write_msgs(lists:seq(1, 250), With),
    Pages0 = stat(Config, "pages"),
    Fun = fun(Page, Acc) -> [length(Page) | Acc] end,
    {ok, Sizes} = mongoose_cassandra:cql_foldl(?POOL, ?ALICE, ?MODULE, fetch_user_messages_query,
                                               #{user_jid => <<"alice@localhost">>, with_jid => With},
                                               Fun, []),
    ?assertEqual([100, 100, 50], lists:reverse(Sizes)),
    ?assertEqual(Pages0 + 3, stat(Config, "pages")),
    %% cql_read gives every page's rows in order.
    ?assertEqual(lists:seq(1, 250), all_ids(With)),
    %% A fun that throws stops the fold in the caller.
    Boom = fun(_, _) -> throw(enough) end,
    ?assertEqual(enough, catch mongoose_cassandra:cql_foldl(?POOL, ?ALICE, ?MODULE,
                                                            fetch_user_messages_query,
                                                            #{user_jid => <<"alice@localhost">>,
                                                              with_jid => With}, Boom, [])),
    ?assertEqual(250, length(all_ids(With))).

write_async_lands(_Config) ->
    With = <<"dave@localhost">>,
    ?assertEqual(ok, mongoose_cassandra:cql_write_async(?POOL, ?ALICE, ?MODULE, insert_query,
                                                        [msg(I, With) || I <- [1, 2, 3]])),
    ?assertEqual(ok, mongoose_cassandra:cql_write_async(?POOL, undefined, ?MODULE, insert_query,
                                                        [msg(4, With)])),
    wait_until(fun() -> all_ids(With) =:= [1, 2, 3, 4] end, 50).

wait_until(F, 0) -> ?assert(F());
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(100), wait_until(F, N - 1)
    end.

%% Stopping a pool closes its session at once, while a process still holds
%% the pool's resource: before, the session lived (and kept reconnecting)
%% until the resource was garbage-collected.
stopped_pool_closes_its_connections(Config) ->
    ok = write_msgs([1], <<"stop@localhost">>),
    ?assert(stat(Config, "open_connections") > 0),
    {ok, #{res := Res}} = mongoose_wpool:get_pool_handle(cassandra, global, ?POOL),
    ok = mongoose_wpool:stop(cassandra, global, ?POOL),
    wait_until(fun() -> stat(Config, "open_connections") =:= 0 end, 20),
    Opened = stat(Config, "connections"),
    timer:sleep(1500),
    %% No reconnection either.
    ?assertEqual({0, Opened}, {stat(Config, "open_connections"), stat(Config, "connections")}),
    ?assert(is_reference(Res)).

test_and_count_queries(_Config) ->
    ?assertEqual(ok, mongoose_cassandra:test_query(?POOL)),
    Before = mongoose_cassandra:total_count_query(?POOL, mam_message),
    ok = write_msgs([1, 2, 3], <<"erin@localhost">>),
    ?assertEqual(Before + 3, mongoose_cassandra:total_count_query(?POOL, mam_message)),
    ?assertEqual(0, mongoose_cassandra:total_count_query(?POOL, mam_config)),
    T = mongoose_cassandra:now_timestamp(),
    ?assert(abs(T - os:system_time(microsecond)) < 1000000),
    ?assertMatch({error, {pool_not_started, _}}, mongoose_cassandra:test_query(nopool)).

stats_show_the_session(Config) ->
    Stats = mongoose_wpool:stats(cassandra, global, ?POOL),
    ?assertEqual(20, proplists:get_value(size, Stats)),
    Node = list_to_binary("127.0.0.1:" ++ integer_to_list(port_of(Config))),
    ?assertEqual([{keyspace, <<"mongooseim">>}, {nodes, [{Node, connected}]}],
                 proplists:get_value(cassandra, Stats)).

bad_requests_are_refused(_Config) ->
    Bad = fun(R) -> ?assertMatch({error, {bad_request, _}}, R), ct:log("~s", [element(2, element(2, R))]) end,
    %% A marker without a value, a value of the wrong type.
    Bad(mongoose_cassandra:cql_read(?POOL, ?ALICE, ?MODULE, fetch_user_messages_query,
                                    #{user_jid => <<"alice@localhost">>})),
    Bad(mongoose_cassandra:cql_write(?POOL, ?ALICE, ?MODULE, insert_query,
                                     [(msg(1, <<>>))#{id => <<"one">>}])),
    Bad(mongoose_cassandra:cql_write(?POOL, ?ALICE, ?MODULE, insert_typed,
                                     [#{k => <<"k">>, n => 1 bsl 40, big => 1, ts => 1, flag => true,
                                        id => <<1>>, tags => [], attrs => #{}, d => 1.0, note => null}])),
    Bad(mongoose_cassandra:cql_read(?POOL, ?ALICE, ?MODULE, fetch_user_messages_query, not_params)),
    Bad(mongoose_wpool:call(cassandra, global, ?POOL, {read, <<"SELECT 1">>, [], #{nope => 1}})),
    Bad(mongoose_wpool:call(cassandra, global, ?POOL, {drop, everything})),
    ?assertError({unknown_query, ?MODULE, nope},
                 mongoose_cassandra:cql_read(?POOL, ?ALICE, ?MODULE, nope, [])),
    ?assertEqual(ok, write_msgs([1], <<"frank@localhost">>)).

server_errors_are_answered(_Config) ->
    {error, {Code, Msg, Kind}} = mongoose_cassandra:cql_read(?POOL, ?ALICE, ?MODULE, missing_table,
                                                             #{k => <<"x">>}),
    ?assertEqual({16#2200, invalid}, {Code, Kind}),
    ?assertEqual(<<"unconfigured table nope">>, Msg).

%%--------------------------------------------------------------------
%% Batches, retries and faults
%%--------------------------------------------------------------------

writes_go_in_batches_of_20(Config) ->
    ok = write_msgs(lists:seq(1, 45), <<"gina@localhost">>),
    ?assertEqual([20, 20, 5], stat(Config, "batch_sizes")),
    ?assertEqual(45, length(all_ids(<<"gina@localhost">>))).

batch_too_large_is_halved(Config) ->
    "ok" = control(Config, "batch_limit 5"),
    ok = write_msgs(lists:seq(1, 20), <<"hank@localhost">>),
    ?assertEqual([20, 10, 5, 5, 5, 5], stat(Config, "batch_sizes")),
    ?assertEqual(20, length(all_ids(<<"hank@localhost">>))),
    %% On the last try the batch is a single row, as in MongooseIM.
    "ok" = control(Config, "reset"),
    "ok" = control(Config, "batch_limit 1"),
    ok = write_msgs(lists:seq(1, 8), <<"ivan@localhost">>),
    %% MongooseIM halves its batch_size option (20 -> 10 -> 5), not the rows sent.
    ?assertEqual([8, 8, 5] ++ lists:duplicate(8, 1), stat(Config, "batch_sizes")),
    ?assertEqual(8, length(all_ids(<<"ivan@localhost">>))).

write_timeout_is_retried(Config) ->
    "ok" = control(Config, "fault write_timeout 3"),
    ?assertEqual(ok, write_msgs([1, 2], <<"jane@localhost">>)),
    ?assertEqual(4, stat(Config, "batches")),
    ?assertEqual([1, 2], lists:sort(all_ids(<<"jane@localhost">>))),
    %% A fourth timeout is one too many.
    "ok" = control(Config, "fault write_timeout 4"),
    {error, {16#1100, _, write_timeout}} = write_msgs([3], <<"jane@localhost">>),
    ?assertEqual(ok, write_msgs([3], <<"jane@localhost">>)).

read_timeout_is_retried(Config) ->
    ok = write_msgs([1], <<"kate@localhost">>),
    "ok" = control(Config, "fault read_timeout 2"),
    ?assertEqual([1], all_ids(<<"kate@localhost">>)),
    "ok" = control(Config, "fault read_timeout 4"),
    ?assertMatch({error, {16#1200, _, read_timeout}},
                 mongoose_cassandra:cql_read(?POOL, ?ALICE, ?MODULE, fetch_user_messages_query,
                                             #{user_jid => <<"alice@localhost">>,
                                               with_jid => <<"kate@localhost">>})).

overloaded_is_not_retried(Config) ->
    "ok" = control(Config, "fault overloaded 1"),
    {error, {16#1001, _, overloaded}} = write_msgs([1], <<"leo@localhost">>),
    ?assertEqual(1, stat(Config, "batches")),
    ?assertEqual(ok, write_msgs([1], <<"leo@localhost">>)).

%% The server closes the connection under a request: MongooseIM's worker
%% retries it (3 times); past that the caller gets an error within
%% call_timeout, and the next call succeeds on a new connection.
dropped_connection_then_recovery(Config) ->
    "ok" = control(Config, "fault drop 1"),
    %% Retried; on a loaded machine the session may still be reconnecting
    %% after the three retries (5-25 ms apart), which answers no_connection.
    case write_msgs([1], <<"mia@localhost">>) of
        ok -> ok;
        {error, {no_connection, _}} -> wait_until(fun() -> write_msgs([1], <<"mia@localhost">>) =:= ok end, 50)
    end,
    "ok" = control(Config, "fault drop 4"),
    T0 = erlang:monotonic_time(millisecond),
    Result = write_msgs([2], <<"mia@localhost">>),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("~p after ~p ms", [Result, Took]),
    ?assertMatch({error, {Kind, _}} when Kind =:= connection_lost; Kind =:= no_connection, Result),
    ?assert(Took < 5000),
    wait_until(fun() -> write_msgs([3], <<"mia@localhost">>) =:= ok end, 50),
    ?assertEqual([1, 3], all_ids(<<"mia@localhost">>)).

%% A request the server never answers: the caller exits at call_timeout as
%% a gen_server call would, nothing reaches its mailbox later, and the pool
%% goes on serving.
stalled_request_times_out(Config) ->
    {ok, _} = start_pool(Config, [{call_timeout, 1000}, {workers, 2}], #{}),
    ok = write_msgs([1], <<"ned@localhost">>),
    "ok" = control(Config, "fault stall 1"),
    T0 = erlang:monotonic_time(millisecond),
    ?assertExit({timeout, _}, write_msgs([2], <<"ned@localhost">>)),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("timed out after ~p ms", [Took]),
    ?assert(Took >= 950 andalso Took < 2000),
    receive Late -> ct:fail({late_message, Late}) after 1000 -> ok end,
    ?assertEqual(ok, write_msgs([3], <<"ned@localhost">>)),
    ?assertEqual([1, 3], all_ids(<<"ned@localhost">>)).

killed_connections_come_back(Config) ->
    ok = write_msgs([1], <<"olga@localhost">>),
    "ok" = control(Config, "kill"),
    wait_until(fun() -> write_msgs([2], <<"olga@localhost">>) =:= ok end, 50),
    ?assertEqual([1, 2], all_ids(<<"olga@localhost">>)).

%%--------------------------------------------------------------------
%% Authentication, TLS, starts that fail
%%--------------------------------------------------------------------

auth(User, Password) ->
    #{auth => #{plain => #{username => User, password => Password}}}.

good_credentials(Config) ->
    {ok, _} = start_pool(Config, [], auth(<<"cassandra">>, list_to_binary(secret()))),
    ?assertEqual(ok, mongoose_cassandra:test_query(?POOL)),
    mongoose_wpool:stop(),
    %% cqerl's form, as seed 000's configs carry it.
    {ok, _} = start_pool(Config, [], #{auth => {cqerl_auth_plain_handler, [{"cassandra", secret()}]}}),
    ?assertEqual(ok, mongoose_cassandra:test_query(?POOL)).

bad_credentials(Config) ->
    {error, {connect_failed, Msg}} = start_pool(Config, [], auth("cassandra", "wrong-" ++ secret())),
    ct:log("~s", [Msg]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"connection.auth.plain.username and connection.auth.plain.password">>)),
    ?assertEqual(nomatch, binary:match(Msg, list_to_binary(secret()))),
    ?assert(stat(Config, "auth_failures") >= 1).

missing_credentials(Config) ->
    {error, {connect_failed, Msg}} = start_pool(Config, [], #{}),
    ct:log("~s", [Msg]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"requires authentication">>)).

tls_with_the_test_ca(Config) ->
    #{ca := CA} = ?config(certs, Config),
    {ok, _} = start_pool(Config, [], #{tls => #{verify_peer => true, cacertfile => CA}}),
    ?assertEqual(ok, write_msgs([1], <<"pat@localhost">>)),
    ?assertEqual([1], all_ids(<<"pat@localhost">>)).

tls_with_another_ca(Config) ->
    #{other_ca := Other} = ?config(certs, Config),
    {error, {connect_failed, Msg}} =
        start_pool(Config, [], #{tls => #{verify_peer => true, cacertfile => Other}}),
    ct:log("~s", [Msg]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"certificate">>)).

tls_legacy_ssl_options(Config) ->
    #{ca := CA} = ?config(certs, Config),
    {ok, _} = start_pool(Config, [], #{ssl => [{cacertfile, CA}, {verify, verify_peer}]}),
    ?assertEqual(ok, mongoose_cassandra:test_query(?POOL)).

%% A listening socket that accepts and never says a word.
server_that_never_answers(_Config) ->
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    {ok, Port} = inet:port(L),
    Acceptor = spawn(fun() -> accept_forever(L, []) end),
    T0 = erlang:monotonic_time(millisecond),
    {error, {connect_failed, Msg}} = start_pool_at(Port, [], #{}),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("~s after ~p ms", [Msg, Took]),
    ?assert(Took < 15000),
    exit(Acceptor, kill),
    gen_tcp:close(L).

accept_forever(L, Held) ->
    case gen_tcp:accept(L) of
        {ok, S} -> accept_forever(L, [S | Held]);
        {error, _} -> ok
    end.

nothing_listening(_Config) ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    gen_tcp:close(L),
    {error, {connect_failed, Msg}} = start_pool_at(Port, [], #{}),
    ct:log("~s", [Msg]),
    ?assertNotEqual(nomatch, binary:match(Msg, list_to_binary("127.0.0.1:" ++ integer_to_list(Port)))).

unknown_keyspace(Config) ->
    {error, {connect_failed, Msg}} = start_pool(Config, [], #{keyspace => "nope"}),
    ct:log("~s", [Msg]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"connection.keyspace nope">>)).

config_errors(Config) ->
    Err = fun(Conn, Expected) ->
                  {error, {invalid_config, Msg}} = start_pool(Config, [], Conn),
                  ct:log("~s", [Msg]),
                  ?assertNotEqual(nomatch, binary:match(Msg, Expected)),
                  ?assertEqual(nomatch, binary:match(Msg, list_to_binary(secret())))
          end,
    Err(#{servers => []}, <<"outgoing_pools.cassandra.default.connection.servers">>),
    Err(#{servers => [#{host => "127.0.0.1", port => 0}]}, <<"connection.servers[0].port">>),
    Err(#{keyspace => "no-dashes"}, <<"connection.keyspace: expected a keyspace name">>),
    Err(#{auth => #{plain => #{username => "u"}}}, <<"connection.auth.plain.password">>),
    Err(#{auth => #{plain => #{username => "u", password => 42}}}, <<"connection.auth.plain.password">>),
    Err(#{auth => #{kerberos => #{}}}, <<"connection.auth.kerberos: unknown option">>),
    Err(#{tls => #{}, ssl => []}, <<"set tls or ssl, not both">>),
    Err(#{tls => #{verify_peer => true, cacertfile => "/nonexistent.pem"}}, <<"connection.tls.cacertfile">>),
    Err(#{pasword => secret()}, <<"connection.pasword: unknown option">>),
    {error, {invalid_config, _}} = mongoose_wpool:start(cassandra, global, ?POOL, [{workers, 0}], #{}).
