%% rdbms pools and mongoose_rdbms against the PostgreSQL and MariaDB servers
%% on loopback: the same cases run in the pgsql and the mysql group, and
%% through ODBC (psqlODBC, MariaDB Connector/ODBC) in the odbc_pgsql and
%% odbc_mysql groups. In those `engine' is the server, `driver' is odbc.
-module(rdbms_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

all() ->
    [{group, pgsql}, {group, mysql}, {group, odbc_pgsql}, {group, odbc_mysql}].

groups() ->
    [{pgsql, [], cases() ++ [closed_idle_connection_is_replaced, password_exchanges,
                                 direct_execute_killed_in_flight]}, {mysql, [], cases()},
     {odbc_pgsql, [], odbc_cases()}, {odbc_mysql, [], odbc_cases()}].

%% The connection options of the tuple form, TLS and the password live in
%% the connection string or odbc.ini for ODBC: its own cases test those.
odbc_cases() ->
    (cases() -- [legacy_server_bad_port, password_not_utf8, tls])
        ++ [odbc_bad_settings, odbc_connection_strings].

cases() ->
    [select_one, query_shapes, sql_errors, prepared_types, prepared_registry,
     escaped_like, escape_helpers, transaction_commits, transaction_rolls_back_on_error,
     transaction_throw, transaction_nested, transaction_isolated_and_held,
     transaction_caller_crash, transaction_query_list, transaction_query_not_iodata,
     abort_logs_rate_limited, delayed_retry, dirty,
     casts_and_requests, killed_connection_is_replaced, keepalive_replaces_killed_connection,
     query_timeout, legacy_server_form, legacy_server_bad_port, bad_config,
     password_not_utf8, refused_login_names_the_options, tls, refused_checkout].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    %% Data sources in files of the tests' own (unixODBC's FILEDSN=): the
    %% VM's os:putenv does not reach the NIF's environment, so no $ODBCINI.
    Dir = ?config(priv_dir, Config),
    [ok = file:write_file(filename:join(Dir, [Name, ".dsn"]), ["[ODBC]\n", odbc_ini(Name)])
     || Name <- [mn_ct_pgsql, mn_ct_mysql]],
    Config.

odbc_ini(mn_ct_pgsql) ->
    "Driver=PostgreSQL Unicode\nServername=127.0.0.1\nPort=5432\nDatabase=test\n"
    "Username=postgres\n";
odbc_ini(mn_ct_mysql) ->
    "Driver=MariaDB Unicode\nServer=127.0.0.1\nPort=3306\nDatabase=test\nUser=root\n".

file_dsn(Config, Name) ->
    "FILEDSN=" ++ filename:join(?config(priv_dir, Config), atom_to_list(Name) ++ ".dsn").

end_per_suite(_Config) ->
    ok.

init_per_group(odbc_pgsql, Config) ->
    [{engine, pgsql}, {driver, odbc} | Config];
init_per_group(odbc_mysql, Config) ->
    [{engine, mysql}, {driver, odbc} | Config];
init_per_group(Engine, Config) ->
    [{engine, Engine}, {driver, Engine} | Config].

end_per_group(_, _Config) ->
    ok.

init_per_testcase(_, Config) ->
    {ok, _} = mongoose_wpool:start(rdbms, global, default, [{workers, 2}],
                                   conn_opts(Config)),
    create_tables(?config(engine, Config)),
    Config.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    ok.

conn_opts(Config) ->
    conn_opts(?config(driver, Config), ?config(engine, Config)).

%% Over ODBC, PostgreSQL without a DSN, MariaDB through the DSN that
%% scripts/setup.sh registers in /etc/odbc.ini.
conn_opts(odbc, pgsql) ->
    #{driver => odbc, settings => "Driver={PostgreSQL Unicode};Servername=127.0.0.1;"
                                  "Port=5432;Database=test;Username=postgres"};
conn_opts(odbc, mysql) ->
    #{driver => odbc, settings => "DSN=mongoose_mysql"};
conn_opts(pgsql, pgsql) ->
    #{driver => pgsql, host => "127.0.0.1", database => "test", username => "postgres",
      password => ""};
conn_opts(mysql, mysql) ->
    #{driver => mysql, host => "127.0.0.1", database => "test", username => "root",
      password => ""}.

%% How values come back: pgsql's text protocol, mysql's, or ODBC's.
shapes(Config) ->
    case ?config(driver, Config) of
        odbc -> odbc;
        Engine -> Engine
    end.

create_tables(Engine) ->
    {Bool, Blob, Big} = case Engine of
                            pgsql -> {"BOOLEAN", "BYTEA", "BIGINT"};
                            mysql -> {"TINYINT(1)", "BLOB", "BIGINT"}
                        end,
    Charset = case Engine of
                  pgsql -> "";
                  mysql -> " CHARACTER SET utf8mb4"
              end,
    q(<<"DROP TABLE IF EXISTS mn_ct_users">>),
    q(<<"DROP TABLE IF EXISTS mn_ct_types">>),
    {updated, _} = q(["CREATE TABLE mn_ct_users (id INT PRIMARY KEY, name VARCHAR(100))",
                      Charset]),
    {updated, _} = q(["CREATE TABLE mn_ct_types (id INT PRIMARY KEY, i ", Big,
                      ", s VARCHAR(250), b ", Blob, ", f ", Bool, ", n VARCHAR(10))", Charset]),
    ok.

q(Query) -> mongoose_rdbms:sql_query(global, Query).

x(Name, Params) -> mongoose_rdbms:execute(global, Name, Params).

prep(Name, Table, Fields, SQL) ->
    case mongoose_rdbms:prepare(Name, Table, Fields, SQL) of
        {ok, Name} -> ok;
        {error, already_exists} -> ok
    end.

count_users() ->
    mongoose_rdbms:selected_to_integer(q(<<"SELECT count(*) FROM mn_ct_users">>)).

%% The connection the caller's queries reach.
backend_id(pgsql) -> backend_id(<<"SELECT pg_backend_pid()">>);
backend_id(mysql) -> backend_id(<<"SELECT CONNECTION_ID()">>);
backend_id(Query) -> mongoose_rdbms:selected_to_integer(q(Query)).

backend_id_on(Tag, Engine) ->
    Query = case Engine of
                pgsql -> <<"SELECT pg_backend_pid()">>;
                mysql -> <<"SELECT CONNECTION_ID()">>
            end,
    mongoose_rdbms:sql_query(global, Tag, Query).

%% Starts pool `Tag' with one worker, kills its connection's server side
%% and returns the id the connection had.
start_and_kill_backend(Tag, Opts, Engine) ->
    {ok, _} = mongoose_wpool:start(rdbms, global, Tag, [{workers, 1}], Opts),
    {selected, [{IdBin}]} = backend_id_on(Tag, Engine),
    Id = mongoose_rdbms:result_to_integer(IdBin),
    kill_backend(Engine, Id),
    Id.

kill_backend(pgsql, Id) ->
    q(["SELECT pg_terminate_backend(", integer_to_binary(Id), ")"]);
kill_backend(mysql, Id) ->
    q(["KILL ", integer_to_binary(Id)]).

%%--------------------------------------------------------------------

select_one(Config) ->
    Engine = ?config(driver, Config),
    Expected = case Engine of
                   pgsql -> {selected, [{<<"1">>}]};
                   _ -> {selected, [{1}]}
               end,
    ?assertEqual(Expected, q(<<"SELECT 1">>)),
    ?assertEqual(Expected, q(["SELECT ", [$1]])),
    ?assertEqual(1, mongoose_rdbms:selected_to_integer(q(<<"SELECT 1">>))),
    ?assertEqual(Engine, mongoose_rdbms:db_engine(global)),
    ?assertEqual(Engine, mongoose_rdbms:db_engine(<<"some.host.type">>)),
    ?assertEqual(generic, mongoose_rdbms:db_type()).

query_shapes(Config) ->
    Engine = shapes(Config),
    ?assertEqual({updated, 1}, q(<<"INSERT INTO mn_ct_users VALUES (1, 'alice')">>)),
    ?assertEqual({updated, 2}, q(<<"INSERT INTO mn_ct_users VALUES (2, 'bob'), (3, 'carol')">>)),
    ?assertEqual({updated, 2}, q(<<"UPDATE mn_ct_users SET name = 'x' WHERE id > 1">>)),
    ?assertEqual({selected, []}, q(<<"SELECT id FROM mn_ct_users WHERE id > 100">>)),
    Rows = q(<<"SELECT id, name FROM mn_ct_users ORDER BY id">>),
    case Engine of
        pgsql ->
            ?assertEqual({selected, [{<<"1">>, <<"alice">>}, {<<"2">>, <<"x">>},
                                     {<<"3">>, <<"x">>}]}, Rows),
            ?assertEqual({updated, 1, [{<<"1">>}]},
                         q(<<"DELETE FROM mn_ct_users WHERE id = 1 RETURNING id">>)),
            ?assertEqual({selected, [{null}]}, q(<<"SELECT NULL">>));
        _ ->
            ?assertEqual({selected, [{1, <<"alice">>}, {2, <<"x">>}, {3, <<"x">>}]}, Rows),
            ?assertEqual({updated, 1}, q(<<"DELETE FROM mn_ct_users WHERE id = 1">>)),
            ?assertEqual({selected, [{null}]}, q(<<"SELECT NULL">>))
    end,
    ?assertEqual({updated, 0}, q(<<"DELETE FROM mn_ct_users WHERE id = 1">>)),
    ?assertEqual(2, count_users()).

sql_errors(_Config) ->
    {error, Msg} = q(<<"SELECT * FROM mn_ct_no_such_table">>),
    ?assert(io_lib:printable_unicode_list(Msg)),
    ?assertNotEqual(nomatch, string:find(Msg, "mn_ct_no_such_table")),
    {error, Syntax} = q(<<"SELEKT 1">>),
    ?assert(is_list(Syntax)),
    {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
    ?assertEqual({error, duplicate_key}, q(<<"INSERT INTO mn_ct_users VALUES (1, 'b')">>)),
    %% Only that caller saw the error; the connections work on.
    [?assertEqual(1, count_users()) || _ <- lists:seq(1, 4)].

prepared_types(Config) ->
    Engine = ?config(engine, Config),
    Shapes = shapes(Config),
    prep(mn_ct_types_insert, mn_ct_types, [id, i, s, b, f, n],
         <<"INSERT INTO mn_ct_types (id, i, s, b, f, n) VALUES (?, ?, ?, ?, ?, ?)">>),
    prep(mn_ct_types_select, mn_ct_types, [id],
         <<"SELECT id, i, s, b, f, n FROM mn_ct_types WHERE id = ?">>),
    Bytes = <<0, 255, 254, 128, 10, 13, 39, 92, "not utf-8: ", 200>>,
    Unicode = <<"zażółć gęślą jaźń 😀"/utf8>>,
    Big = 1 bsl 53 + 7,
    ?assertEqual({updated, 1}, x(mn_ct_types_insert, [1, Big, Unicode, Bytes, true, null])),
    ?assertEqual({updated, 1}, x(mn_ct_types_insert, [2, -5, <<>>, <<>>, false, <<"v">>])),
    ?assertEqual({updated, 1}, x(mn_ct_types_insert, [3, null, null, null, null, null])),
    %% MongooseIM's ODBC backend: BIGINT as text, psqlODBC's booleans as "1"/"0".
    {True, False} = case {Shapes, Engine} of
                        {pgsql, _} -> {true, false};
                        {odbc, pgsql} -> {<<"1">>, <<"0">>};
                        {_, mysql} -> {1, 0}
                    end,
    {BigOut, Minus5, FortyTwo} = case Shapes of
                                     odbc -> {integer_to_binary(Big), <<"-5">>, <<"42">>};
                                     _ -> {Big, -5, 42}
                                 end,
    ?assertEqual({selected, [{1, BigOut, Unicode, Bytes, True, null}]},
                 x(mn_ct_types_select, [1])),
    ?assertEqual({selected, [{2, Minus5, <<>>, <<>>, False, <<"v">>}]},
                 x(mn_ct_types_select, [2])),
    ?assertEqual({selected, [{3, null, null, null, null, null}]}, x(mn_ct_types_select, [3])),
    ?assertEqual({selected, []}, x(mn_ct_types_select, [4])),
    ?assertEqual({error, duplicate_key}, x(mn_ct_types_insert, [1, 0, <<>>, <<>>, true, null])),
    %% Integers given as binaries, and an iolist for a string.
    ?assertEqual({updated, 1}, x(mn_ct_types_insert, [5, <<"42">>, [<<"io">>, "list"], <<>>,
                                                      false, null])),
    ?assertMatch({selected, [{5, FortyTwo, <<"iolist">>, <<>>, False, null}]},
                 x(mn_ct_types_select, [5])),
    %% The simple protocol gives text on pgsql.
    case Shapes of
        odbc ->
            ?assertEqual({selected, [{1, True}]},
                         q(<<"SELECT id, f FROM mn_ct_types WHERE id = 1">>));
        pgsql ->
            ?assertEqual({selected, [{<<"1">>, <<"t">>}]},
                         q(<<"SELECT id, f FROM mn_ct_types WHERE id = 1">>));
        mysql ->
            ?assertEqual({selected, [{1, 1}]}, q(<<"SELECT id, f FROM mn_ct_types WHERE id = 1">>))
    end,
    ?assertMatch({selected, [_]}, mongoose_rdbms:execute_successfully(global, mn_ct_types_select, [1])),
    %% Every worker prepares the statement on first use.
    [?assertEqual({selected, [{1, BigOut, Unicode, Bytes, True, null}]},
                  x(mn_ct_types_select, [1])) || _ <- lists:seq(1, 6)].

prepared_registry(_Config) ->
    prep(mn_ct_reg, mn_ct_users, [id], <<"SELECT name FROM mn_ct_users WHERE id = ?">>),
    ?assert(mongoose_rdbms:prepared(mn_ct_reg)),
    ?assertNot(mongoose_rdbms:prepared(mn_ct_never_prepared)),
    ?assertEqual({error, already_exists},
                 mongoose_rdbms:prepare(mn_ct_reg, <<"mn_ct_users">>, [<<"id">>], <<"SELECT 1">>)),
    ?assertError({lookup_statement_failed, mn_ct_never_prepared}, x(mn_ct_never_prepared, [])),
    ?assertError(#{what := sql_execute_failed},
                 mongoose_rdbms:execute_successfully(global, mn_ct_reg, [1, 2])),
    {error, Wrong} = x(mn_ct_reg, [1, 2]),
    ?assert(is_list(Wrong)).

escaped_like(Config) ->
    prep(mn_ct_users_insert, mn_ct_users, [id, name], <<"INSERT INTO mn_ct_users VALUES (?, ?)">>),
    prep(mn_ct_users_like, mn_ct_users, [name],
         <<"SELECT id FROM mn_ct_users WHERE name LIKE ? ESCAPE '$' ORDER BY id">>),
    Names = [<<"a%b">>, <<"a_b">>, <<"axb">>, <<"a$b">>, <<"xa%bx">>],
    [{updated, 1} = x(mn_ct_users_insert, [I, N])
     || {I, N} <- lists:zip(lists:seq(1, length(Names)), Names)],
    Like = fun(S) ->
                   {selected, Rows} =
                       x(mn_ct_users_like,
                         [<<"%", (mongoose_rdbms:escape_prepared_like(S))/binary, "%">>]),
                   [mongoose_rdbms:result_to_integer(Id) || {Id} <- Rows]
           end,
    ?assertEqual([1, 5], Like(<<"a%b">>)),
    ?assertEqual([2], Like(<<"a_b">>)),
    ?assertEqual([4], Like(<<"a$b">>)),
    ?assertEqual([1, 2, 3, 4, 5], Like(<<"a">>)),
    %% The same with the text-query helpers.
    Text = fun(Escaped) ->
                   {selected, Rows} = q(["SELECT id FROM mn_ct_users WHERE name LIKE ",
                                         mongoose_rdbms:use_escaped_like(Escaped),
                                         " ORDER BY id"]),
                   [mongoose_rdbms:result_to_integer(Id) || {Id} <- Rows]
           end,
    case ?config(engine, Config) of
        mysql ->
            ?assertEqual([1, 5], Text(mongoose_rdbms:escape_like(<<"a%b">>))),
            ?assertEqual([2], Text(mongoose_rdbms:escape_like("a_b"))),
            ?assertEqual([1], Text(mongoose_rdbms:escape_like_prefix(<<"a%">>)));
        pgsql ->
            %% As in MongooseIM: pgsql connections run with
            %% standard_conforming_strings off, so the backslash before % and
            %% _ is eaten by the literal and they stay wildcards (MongooseIM's
            %% pgsql code uses escape_prepared_like for that reason). The
            %% pattern is still a safe literal.
            ?assertEqual([1, 2, 3, 4, 5], Text(mongoose_rdbms:escape_like(<<"a%b">>))),
            ?assertEqual([], Text(mongoose_rdbms:escape_like(<<"a'b">>)))
    end.

escape_helpers(Config) ->
    Engine = ?config(engine, Config),
    Tricky = <<"O'Reilly \\ \"quoted\" \n tab\t ; -- zażółć"/utf8>>,
    S = mongoose_rdbms:use_escaped_string(mongoose_rdbms:escape_string(Tricky)),
    I = mongoose_rdbms:use_escaped_integer(mongoose_rdbms:escape_integer(7)),
    {updated, 1} = q(["INSERT INTO mn_ct_users VALUES (", I, ", ", S, ")"]),
    ?assertEqual({selected, [{Tricky}]}, q(<<"SELECT name FROM mn_ct_users WHERE id = 7">>)),
    Bytes = <<0, 1, 2, 255, 39, 92, 200>>,
    B = mongoose_rdbms:use_escaped_binary(mongoose_rdbms:escape_binary(global, Bytes)),
    T = mongoose_rdbms:use_escaped(mongoose_rdbms:escape_boolean(true)),
    N = mongoose_rdbms:use_escaped(mongoose_rdbms:escape_null()),
    {updated, 1} = q(["INSERT INTO mn_ct_types (id, b, f, n) VALUES (1, ", B, ", ", T, ", ", N, ")"]),
    {selected, [{Stored, Flag}]} = q(<<"SELECT b, f FROM mn_ct_types WHERE id = 1">>),
    ?assertEqual(Bytes, mongoose_rdbms:unescape_binary(global, Stored)),
    ?assert(mongoose_rdbms:to_bool(Flag)),
    ?assertEqual(Engine =:= pgsql, is_binary(Flag)),
    ?assertError({use_escaped_string, <<"raw">>}, mongoose_rdbms:use_escaped_string(<<"raw">>)),
    ?assertError({use_escaped, 1}, mongoose_rdbms:use_escaped(1)),
    ?assertEqual(5, mongoose_rdbms:result_to_integer(<<"5">>)),
    ?assertEqual($a, mongoose_rdbms:character_to_integer(<<"a">>)),
    ?assertNot(mongoose_rdbms:to_bool(<<"f">>)).

transaction_commits(Config) ->
    Engine = ?config(driver, Config),
    prep(mn_ct_users_insert, mn_ct_users, [id, name], <<"INSERT INTO mn_ct_users VALUES (?, ?)">>),
    Result = mongoose_rdbms:sql_transaction(
               global,
               fun() ->
                       {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
                       {updated, 1} = x(mn_ct_users_insert, [2, <<"b">>]),
                       ?assertEqual(Engine, mongoose_rdbms:db_engine(global)),
                       count_users()
               end),
    ?assertEqual({atomic, 2}, Result),
    ?assertEqual(2, count_users()),
    ?assertEqual(undefined, get(mongoose_rdbms_state)).

transaction_rolls_back_on_error(_Config) ->
    Result = mongoose_rdbms:sql_transaction(
               global,
               fun() ->
                       {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
                       error(boom)
               end),
    ?assertEqual({aborted, boom}, Result),
    ?assertEqual(0, count_users()),
    ExitResult = mongoose_rdbms:sql_transaction(
                   global,
                   fun() ->
                           {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
                           exit(gone)
                   end),
    ?assertEqual({aborted, gone}, ExitResult),
    ?assertEqual(0, count_users()).

transaction_throw(_Config) ->
    %% A thrown {aborted, _} (what sql_query_t throws) reruns the fun, then aborts.
    put(runs, 0),
    Result = mongoose_rdbms:sql_transaction(
               global,
               fun() ->
                       put(runs, get(runs) + 1),
                       {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
                       throw({aborted, my_reason})
               end),
    ?assertEqual({aborted, my_reason}, Result),
    ?assertEqual(11, get(runs)),
    ?assertEqual(0, count_users()),
    %% An SQL error through sql_query_t: rolled back, the reason is the error.
    {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
    Dup = mongoose_rdbms:sql_transaction(
            global,
            fun() ->
                    mongoose_rdbms:sql_query_t(<<"INSERT INTO mn_ct_users VALUES (2, 'b')">>),
                    mongoose_rdbms:sql_query_t(<<"INSERT INTO mn_ct_users VALUES (1, 'c')">>)
            end),
    ?assertEqual({aborted, duplicate_key}, Dup),
    ?assertEqual(1, count_users()),
    %% Any other thrown value is the fun's result, as in MongooseIM.
    ?assertEqual({atomic, other},
                 mongoose_rdbms:sql_transaction(
                   global,
                   fun() ->
                           {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (3, 'c')">>),
                           throw(other)
                   end)),
    ?assertEqual(2, count_users()).

transaction_nested(Config) ->
    Engine = ?config(engine, Config),
    Outer = self(),
    Result = mongoose_rdbms:sql_transaction(
               global,
               fun() ->
                       Id = backend_id(Engine),
                       {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
                       Inner = mongoose_rdbms:sql_transaction(
                                 global,
                                 fun() ->
                                         ?assertEqual(Outer, self()),
                                         ?assertEqual(Id, backend_id(Engine)),
                                         {updated, 1} =
                                             q(<<"INSERT INTO mn_ct_users VALUES (2, 'b')">>),
                                         count_users()
                                 end),
                       ?assertEqual({atomic, 2}, Inner),
                       ?assertEqual({aborted, inner_reason},
                                    mongoose_rdbms:sql_transaction(
                                      global, fun() -> throw({aborted, inner_reason}) end)),
                       Dirty = mongoose_rdbms:sql_dirty(global, fun() -> backend_id(Engine) end),
                       ?assertEqual(Id, Dirty),
                       done
               end),
    ?assertEqual({atomic, done}, Result),
    ?assertEqual(2, count_users()).

transaction_isolated_and_held(Config) ->
    Engine = ?config(engine, Config),
    Self = self(),
    Result = mongoose_rdbms:sql_transaction(
               global,
               fun() ->
                       {updated, 1} = q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
                       Id = backend_id(Engine),
                       %% Another process neither sees the row nor gets this
                       %% connection: the worker is busy with the transaction.
                       %% (One call only: a worker's load drops just after
                       %% its answer is sent, so a caller's next call may
                       %% still see it busy and pick the held worker.)
                       IdFun = case Engine of
                                   pgsql -> <<"pg_backend_pid()">>;
                                   mysql -> <<"CONNECTION_ID()">>
                               end,
                       spawn(fun() ->
                                     {selected, [{C, O}]} =
                                         q([<<"SELECT count(*), ">>, IdFun,
                                            <<" FROM mn_ct_users">>]),
                                     Self ! {other, mongoose_rdbms:result_to_integer(C),
                                             mongoose_rdbms:result_to_integer(O)}
                             end),
                       receive
                           {other, Count, OtherId} ->
                               ?assertEqual(0, Count),
                               ?assertNotEqual(Id, OtherId)
                       after 5000 ->
                               ct:fail({other_process_blocked,
                                        mongoose_wpool:stats(rdbms, global, default)})
                       end,
                       wait_until(fun() ->
                                          Stats = mongoose_wpool:stats(rdbms, global, default),
                                          1 =:= proplists:get_value(total_in_flight, Stats)
                                  end),
                       ok
               end),
    ?assertEqual({atomic, ok}, Result),
    ?assertEqual(1, count_users()).

transaction_caller_crash(Config) ->
    Engine = ?config(engine, Config),
    Self = self(),
    {Pid, Mon} = spawn_monitor(
                   fun() ->
                           mongoose_rdbms:sql_transaction(
                             global,
                             fun() ->
                                     {updated, 1} =
                                         q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
                                     Self ! {inside, backend_id(Engine)},
                                     receive never -> ok end
                             end)
                   end),
    Id = receive {inside, I} -> I after 5000 -> ct:fail(no_transaction) end,
    exit(Pid, kill),
    receive {'DOWN', Mon, process, Pid, killed} -> ok end,
    %% The resource's destructor rolled back and gave the connection back:
    %% both workers serve transactions again, the held one included.
    wait_until(fun() -> count_users() =:= 0 end),
    Hold = fun() ->
                   P = spawn(fun() ->
                                     R = mongoose_rdbms:sql_transaction(
                                           global, fun() ->
                                                           Self ! {held, self(), backend_id(Engine)},
                                                           receive go -> ok end
                                                   end),
                                     Self ! {done, self(), R}
                             end),
                   receive {held, P, HeldId} -> {P, HeldId} after 5000 -> ct:fail(not_held) end
           end,
    {Pids, Held} = lists:unzip([Hold(), Hold()]),
    [P ! go || P <- Pids],
    [receive {done, P, R} -> ?assertEqual({atomic, ok}, R) after 5000 -> ct:fail(not_done) end
     || P <- Pids],
    ?assertEqual(2, length(lists:usort(Held))),
    ?assert(lists:member(Id, Held)),
    ?assertEqual(0, count_users()),
    wait_until(fun() ->
                       Stats = mongoose_wpool:stats(rdbms, global, default),
                       0 =:= proplists:get_value(total_in_flight, Stats)
               end).

transaction_query_list(Config) ->
    Engine = ?config(engine, Config),
    {atomic, [{updated, 1}, {updated, 1}, {selected, [{Count}]}]} =
        mongoose_rdbms:sql_transaction(global, [<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>,
                                                <<"INSERT INTO mn_ct_users VALUES (2, 'b')">>,
                                                <<"SELECT count(*) FROM mn_ct_users">>]),
    ?assertEqual(2, mongoose_rdbms:result_to_integer(Count)),
    %% count(*) is a BIGINT: text over ODBC too.
    ?assertEqual(Engine =:= pgsql orelse shapes(Config) =:= odbc, is_binary(Count)),
    {aborted, Reason} =
        mongoose_rdbms:sql_transaction(global, [<<"INSERT INTO mn_ct_users VALUES (3, 'c')">>,
                                                <<"INSERT INTO mn_ct_nope VALUES (1)">>]),
    ?assert(is_list(Reason)),
    ?assertEqual(2, count_users()).

%% A query that is not iodata never reaches the server: the transaction is
%% aborted with the reason, and the connection works on.
transaction_query_not_iodata(_Config) ->
    [begin
         Result = mongoose_rdbms:sql_transaction(
                    global, fun() -> mongoose_rdbms:sql_query_t(Query) end),
         ?assertMatch({aborted, {bad_request, _}}, Result),
         {aborted, {bad_request, Why}} = Result,
         ?assertNotEqual(nomatch, binary:match(Why, <<"query: expected iodata">>))
     end || Query <- [not_iodata, {not_iodata}, [<<"SELECT ">>, one]]],
    ?assertEqual(0, count_users()).

%% Aborts repeated at any rate log at most one line a second per kind; the
%% next line counts the ones suppressed meanwhile.
abort_logs_rate_limited(_Config) ->
    Abort = fun() -> {aborted, boom} = mongoose_rdbms:sql_transaction(global, fun() -> error(boom) end) end,
    ok = logger:add_handler(mn_ct_abort_lines, ?MODULE, #{config => #{pid => self()}}),
    try
        %% A line that starts a window of its own, whatever earlier cases logged.
        timer:sleep(1100),
        Abort(),
        [_] = logged(rdbms_outer_transaction_failed),
        T0 = erlang:monotonic_time(millisecond),
        [Abort() || _ <- lists:seq(1, 200)],
        Elapsed = erlang:monotonic_time(millisecond) - T0,
        timer:sleep(1100),
        Abort(),
        Lines = logged(rdbms_outer_transaction_failed),
        ?assert(length(Lines) =< Elapsed div 1000 + 2, {length(Lines), Elapsed}),
        ?assertEqual(201, lists:sum([1 + maps:get(suppressed, L, 0) || L <- Lines]))
    after
        logger:remove_handler(mn_ct_abort_lines)
    end.

%% The logger handler of abort_logs_rate_limited: each report to the test.
log(#{msg := {report, Report}}, #{config := #{pid := Pid}}) ->
    Pid ! {logged, Report};
log(_Event, _Config) ->
    ok.

logged(What) ->
    receive
        {logged, Report = #{what := What}} -> [Report | logged(What)];
        {logged, _} -> logged(What)
    after 200 -> []
    end.

delayed_retry(_Config) ->
    put(tries, 0),
    F = fun() ->
                N = get(tries) + 1,
                put(tries, N),
                case N < 3 of
                    true -> throw({aborted, not_yet});
                    false -> q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>)
                end
        end,
    %% sql_transaction reruns a thrown {aborted, _} itself first.
    ?assertEqual({atomic, {updated, 1}},
                 mongoose_rdbms:transaction_with_delayed_retry(global, F,
                                                               #{retries => 2, delay => 10})),
    ?assertEqual(3, get(tries)),
    put(tries, 0),
    Never = fun() -> put(tries, get(tries) + 1), throw({aborted, never}) end,
    ?assertError(#{what := rdbms_transaction_failed},
                 mongoose_rdbms:transaction_with_delayed_retry(global, Never,
                                                               #{retries => 1, delay => 10})),
    ?assertEqual(22, get(tries)).

dirty(Config) ->
    Engine = ?config(engine, Config),
    ?assertEqual({updated, 1},
                 mongoose_rdbms:sql_dirty(global, fun() ->
                                                          q(<<"INSERT INTO mn_ct_users VALUES (1, 'a')">>)
                                                  end)),
    ?assertEqual(1, count_users()),
    ?assertThrow(oops, mongoose_rdbms:sql_dirty(global, fun() -> error(oops) end)),
    Id = mongoose_rdbms:sql_dirty(global, fun() ->
                                                  A = backend_id(Engine),
                                                  A = backend_id(Engine)
                                          end),
    ?assert(is_integer(Id)).

casts_and_requests(_Config) ->
    prep(mn_ct_users_insert, mn_ct_users, [id, name], <<"INSERT INTO mn_ct_users VALUES (?, ?)">>),
    ok = mongoose_rdbms:sql_query_cast(global, <<"INSERT INTO mn_ct_users VALUES (1, 'a')">>),
    ok = mongoose_rdbms:execute_cast(global, mn_ct_users_insert, [2, <<"b">>]),
    wait_until(fun() -> count_users() =:= 2 end),
    R1 = mongoose_rdbms:sql_query_request(global, <<"SELECT count(*) FROM mn_ct_users">>),
    {reply, Selected} = gen_server:receive_response(R1, 5000),
    ?assertEqual(2, mongoose_rdbms:selected_to_integer(Selected)),
    R2 = mongoose_rdbms:execute_request(global, mn_ct_users_insert, [3, <<"c">>]),
    ?assertEqual({reply, {updated, 1}}, gen_server:receive_response(R2, 5000)),
    R3 = mongoose_rdbms:sql_transaction_request(global, fun() -> count_users() end),
    ?assertEqual({reply, {atomic, 3}}, gen_server:receive_response(R3, 5000)),
    R4 = mongoose_rdbms:execute_wrapped_request(global, mn_ct_users_insert, [4, <<"d">>],
                                                fun(Run) -> {wrapped, Run()} end),
    ?assertEqual({reply, {wrapped, {updated, 1}}}, gen_server:receive_response(R4, 5000)),
    ?assertEqual(4, count_users()).

killed_connection_is_replaced(Config) ->
    Engine = ?config(engine, Config),
    Id = start_and_kill_backend(single, conn_opts(Config), Engine),
    %% The call that finds the connection dead fails, the next one succeeds
    %% on a new connection.
    First = backend_id_on(single, Engine),
    case First of
        {error, _} -> ok;
        {selected, _} -> ct:pal("the first call already got a new connection")
    end,
    {selected, [{NewBin}]} = backend_id_on(single, Engine),
    ?assertNotEqual(Id, mongoose_rdbms:result_to_integer(NewBin)).

%% pgsql: the worker runs the connection's own I/O, so it sees the server
%% close an idle connection and replaces it before anyone asks (no
%% keepalive here): the next call does not fail.
closed_idle_connection_is_replaced(Config) ->
    Engine = ?config(engine, Config),
    Id = start_and_kill_backend(single, conn_opts(Config), Engine),
    timer:sleep(1000),
    {selected, [{NewBin}]} = backend_id_on(single, Engine),
    ?assertNotEqual(Id, mongoose_rdbms:result_to_integer(NewBin)).

%% pgsql: at an idle pool an execute of a statement its worker's connection
%% has prepared is written by the caller's own thread and answered from
%% the connection's I/O. Killed while it runs, the caller gets the lost
%% connection at once (not the statement's 3 s, nor a timeout), and the
%% next execute runs on a new connection.
direct_execute_killed_in_flight(_Config) ->
    prep(mn_ct_sleep, mn_ct_users, [id], <<"SELECT pg_backend_pid(), pg_sleep(?)">>),
    %% Prepared on the connections an idle pool's calls go to.
    Before = lists:usort([Pid || _ <- lists:seq(1, 4),
                                 {selected, [{Pid, _}]} <- [x(mn_ct_sleep, [0])]]),
    {ok, _} = mongoose_wpool:start(rdbms, global, watch, [{workers, 1}],
                                   conn_opts(pgsql, pgsql)),
    Self = self(),
    spawn_link(fun() -> Self ! {slept, x(mn_ct_sleep, [3])} end),
    Sleeping = <<"SELECT pid FROM pg_stat_activity WHERE state = 'active' "
                 "AND query LIKE 'SELECT pg_backend_pid(), pg_sleep%'">>,
    wait_until(fun() -> length(element(2, mongoose_rdbms:sql_query(global, watch, Sleeping))) =:= 1 end),
    {selected, [{Pid}]} = mongoose_rdbms:sql_query(global, watch, Sleeping),
    ?assert(lists:member(binary_to_integer(Pid), Before)),
    T0 = erlang:monotonic_time(millisecond),
    mongoose_rdbms:sql_query(global, watch, ["SELECT pg_terminate_backend(", Pid, ")"]),
    receive
        {slept, Lost} ->
            ct:pal("~p", [Lost]),
            ?assertMatch({error, _}, Lost),
            ?assertNotEqual(nomatch, binary:match(term_to_binary(Lost), <<"terminating">>)),
            ?assert(erlang:monotonic_time(millisecond) - T0 < 1000)
    after 2500 -> ct:fail(no_answer)
    end,
    wait_until(fun() -> element(1, x(mn_ct_sleep, [0])) =:= selected end),
    After = lists:usort([P || _ <- lists:seq(1, 4), {selected, [{P, _}]} <- [x(mn_ct_sleep, [0])]]),
    ?assertNot(lists:member(binary_to_integer(Pid), After)).

keepalive_replaces_killed_connection(Config) ->
    Engine = ?config(engine, Config),
    Id = start_and_kill_backend(ka, (conn_opts(Config))#{keepalive_interval => 1}, Engine),
    timer:sleep(2500),
    %% The keepalive found it dead and replaced it: no call fails.
    {selected, [{NewBin}]} = backend_id_on(ka, Engine),
    ?assertNotEqual(Id, mongoose_rdbms:result_to_integer(NewBin)).

query_timeout(Config) ->
    Engine = ?config(engine, Config),
    {ok, _} = mongoose_wpool:start(rdbms, global, slow, [{workers, 1}, {call_timeout, 500}],
                                   conn_opts(Config)),
    Sleep = case Engine of
                pgsql -> <<"SELECT pg_sleep(3)">>;
                mysql -> <<"SELECT SLEEP(3)">>
            end,
    T0 = erlang:monotonic_time(millisecond),
    ?assertExit({timeout, _}, mongoose_rdbms:sql_query(global, slow, Sleep)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 1500),
    %% The connection is usable again (cancelled on the server, or replaced).
    wait_until(fun() -> {selected, [x]} =:= backend_id_on_ok(slow, Engine) end),
    T1 = erlang:monotonic_time(millisecond),
    ?assertMatch({selected, [_]}, backend_id_on(slow, Engine)),
    ?assert(erlang:monotonic_time(millisecond) - T1 < 500),
    %% A transaction's query past call_timeout: the caller exits, the
    %% connection is rolled back and comes back.
    case catch mongoose_rdbms:sql_transaction(
                 global, slow, fun() -> mongoose_rdbms:sql_query(global, slow, Sleep) end) of
        {aborted, {timeout, _}} -> ok;
        {'EXIT', {timeout, _}} -> ok;
        {atomic, {error, _}} -> ok; % the server cancelled it first
        Other -> ct:fail({unexpected, Other})
    end,
    wait_until(fun() -> {selected, [x]} =:= backend_id_on_ok(slow, Engine) end),
    timer:sleep(3000),
    receive Late -> ct:fail({late_message, Late}) after 0 -> ok end.

backend_id_on_ok(Tag, Engine) ->
    case catch backend_id_on(Tag, Engine) of
        {selected, [_]} -> {selected, [x]};
        Other -> Other
    end.

%% Over ODBC: seed 000's connection string, and the tuple naming odbc.
legacy_server_form(Config) ->
    Server = case {?config(driver, Config), ?config(engine, Config)} of
                 {odbc, pgsql} -> "DSN=mongoose_pgsql";
                 {odbc, mysql} -> {odbc, "DSN=mongoose_mysql"};
                 {pgsql, _} -> {pgsql, "127.0.0.1", 5432, "test", "postgres", ""};
                 {mysql, _} -> {mysql, "127.0.0.1", "test", "root", ""}
             end,
    [{ok, _}] = mongoose_wpool:start_configured_pools(
                  [{rdbms, global, legacy, [{workers, 1}],
                    [{server, Server}, {keepalive_interval, 30}]}], []),
    ?assertMatch({selected, [_]}, mongoose_rdbms:sql_query(global, legacy, <<"SELECT 1">>)).

%% Each element of a legacy tuple is checked like the option it stands for:
%% a port given as a string is refused, not read as the database.
legacy_server_bad_port(Config) ->
    {Engine, User} = case ?config(engine, Config) of
                         pgsql -> {pgsql, "postgres"};
                         mysql -> {mysql, "root"}
                     end,
    Canary = "S3cr3t-canary-7",
    Start = fun(Server) ->
                    mongoose_wpool:start(rdbms, global, legacy_bad, [{workers, 1}],
                                         [{server, Server}])
            end,
    {error, {invalid_config, Port}} = Start({Engine, "127.0.0.1", "5432", "test", User, Canary}),
    ?assertNotEqual(nomatch,
                    binary:match(Port, <<"outgoing_pools.rdbms.legacy_bad.connection.server: "
                                         "element 3 (port): expected an integer between 1 "
                                         "and 65535">>)),
    {error, {invalid_config, Pass}} = Start({Engine, "127.0.0.1", 5432, "test", User, {Canary}}),
    ?assertNotEqual(nomatch, binary:match(Pass, <<"element 6 (password): expected a string">>)),
    [?assertEqual(nomatch, binary:match(Msg, list_to_binary(Canary))) || Msg <- [Port, Pass]],
    ?assertEqual([{rdbms, global, default}], mongoose_wpool:get_pools()).

bad_config(Config) ->
    Conn = conn_opts(Config),
    {error, {invalid_config, PortMsg}} =
        mongoose_wpool:start(rdbms, global, bad1, [], Conn#{port => <<"5432">>}),
    ?assertNotEqual(nomatch, binary:match(PortMsg, <<"outgoing_pools.rdbms.bad1.connection">>)),
    {error, {invalid_config, DriverMsg}} =
        mongoose_wpool:start(rdbms, global, bad2, [], Conn#{driver => cockroachdb}),
    ?assertNotEqual(nomatch, binary:match(DriverMsg, <<"not supported">>)),
    case ?config(driver, Config) of
        odbc -> ok; % odbc_bad_settings
        _ -> bad_server(?config(engine, Config), Conn)
    end,
    ?assertEqual([{rdbms, global, default}], mongoose_wpool:get_pools()).

bad_server(Engine, Conn) ->
    {error, {connect_failed, Refused}} =
        mongoose_wpool:start(rdbms, global, bad3, [{workers, 1}], Conn#{port => 1}),
    ?assertNotEqual(nomatch, binary:match(Refused, <<"127.0.0.1:1">>)),
    case Engine of
        mysql ->
            {error, {connect_failed, Denied}} =
                mongoose_wpool:start(rdbms, global, bad4, [{workers, 1}],
                                     Conn#{password => "hunter2-secret"}),
            ?assertEqual(nomatch, binary:match(Denied, <<"hunter2-secret">>));
        pgsql ->
            {error, {connect_failed, NoDb}} =
                mongoose_wpool:start(rdbms, global, bad4, [{workers, 1}],
                                     Conn#{database => "mn_ct_no_such_db"}),
            ?assertNotEqual(nomatch, binary:match(NoDb, <<"mn_ct_no_such_db">>))
    end.

%% A password that is not UTF-8 is refused with a message that says so,
%% without its bytes.
password_not_utf8(Config) ->
    Conn = conn_opts(Config),
    {error, {invalid_config, Msg}} =
        mongoose_wpool:start(rdbms, global, bad_pw, [{workers, 1}],
                             Conn#{password => <<255, 254, "S3cr3t">>}),
    ?assertEqual(<<"outgoing_pools.rdbms.bad_pw.connection.password: expected UTF-8 text, "
                   "got a binary that is not valid UTF-8">>, Msg).

wait_until(F) ->
    wait_until(F, 100).

wait_until(F, 0) ->
    ?assert(F());
wait_until(F, N) ->
    case catch F() of
        true -> ok;
        _ -> timer:sleep(50), wait_until(F, N - 1)
    end.

%% The loopback PostgreSQL has TLS on, the MariaDB off.
tls(Config) ->
    Engine = ?config(engine, Config),
    Conn = conn_opts(Config),
    WrongCA = "/etc/ssl/certs/ca-certificates.crt",
    case Engine of
        pgsql ->
            {ok, _} = mongoose_wpool:start(rdbms, global, tls, [{workers, 1}],
                                           Conn#{tls => #{required => true}}),
            ?assertEqual({selected, [{<<"t">>}]},
                         mongoose_rdbms:sql_query(
                           global, tls,
                           <<"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()">>)),
            ?assertEqual({selected, [{<<"f">>}]},
                         q(<<"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()">>)),
            {error, {connect_failed, _}} =
                mongoose_wpool:start(rdbms, global, tls_verify, [{workers, 1}],
                                     Conn#{tls => #{verify_peer => true, cacertfile => WrongCA}});
        mysql ->
            {error, {invalid_config, Required}} =
                mongoose_wpool:start(rdbms, global, tls, [{workers, 1}],
                                     Conn#{tls => #{required => true}}),
            ?assertNotEqual(nomatch, binary:match(Required, <<"tls.required">>)),
            {error, {connect_failed, _}} =
                mongoose_wpool:start(rdbms, global, tls, [{workers, 1}],
                                     Conn#{tls => #{verify_peer => false}})
    end,
    {error, {invalid_config, Missing}} =
        mongoose_wpool:start(rdbms, global, tls_bad, [{workers, 1}],
                             Conn#{tls => #{cacertfile => "/nonexistent/ca.pem"}}),
    ?assertNotEqual(nomatch, binary:match(Missing, <<"tls.cacertfile">>)).

%% A checkout the pool refuses at once exits like any call, and leaves no
%% message behind.
refused_checkout(Config) ->
    {ok, _} = mongoose_wpool:start(rdbms, global, nav,
                                   [{workers, 1}, {strategy, next_available_worker}],
                                   conn_opts(Config)),
    Self = self(),
    Holder = spawn(fun() ->
                           R = mongoose_rdbms:sql_transaction(
                                 global, nav, fun() -> Self ! held, receive go -> ok end end),
                           Self ! {done, R}
                   end),
    receive held -> ok after 5000 -> ct:fail(not_held) end,
    ?assertExit(no_available_workers,
                mongoose_rdbms:sql_transaction(global, nav, fun() -> ok end)),
    ?assertExit(no_available_workers, mongoose_rdbms:sql_query(global, nav, <<"SELECT 1">>)),
    receive Stray -> ct:fail({stray_message, Stray}) after 300 -> ok end,
    Holder ! go,
    receive {done, R} -> ?assertEqual({atomic, ok}, R) after 5000 -> ct:fail(not_done) end,
    wait_until(fun() ->
                       {atomic, 1} =:= mongoose_rdbms:sql_transaction(global, nav, fun() -> 1 end)
               end).

%% The options of user mn_login with password P (`none': without one), and
%% the option a refusal names.
login_opts(odbc) ->
    {fun(none) -> #{driver => odbc, settings => "DSN=mongoose_mysql;UID=mn_login"};
        (P) -> #{driver => odbc, settings => "DSN=mongoose_mysql;UID=mn_login;PWD=" ++ P}
     end, <<"connection.settings">>};
login_opts(mysql) ->
    Conn = (conn_opts(mysql, mysql))#{username => "mn_login"},
    {fun(none) -> maps:remove(password, Conn);
        (P) -> Conn#{password => P}
     end, <<"connection.password">>}.

%% A server that refuses the login fails the start with an error naming the
%% options to fix, never the password. PostgreSQL trusts loopback logins
%% here but for two roles, which password_exchanges (pgsql group) drives.
refused_login_names_the_options(Config) ->
    case ?config(engine, Config) of
        pgsql -> {skip, "PostgreSQL: see password_exchanges"};
        mysql ->
            Create = <<"CREATE USER IF NOT EXISTS 'mn_login'@'127.0.0.1' IDENTIFIED BY 'right-one'">>,
            {updated, _} = mongoose_rdbms:sql_query(global, Create),
            {updated, _} = mongoose_rdbms:sql_query(
                             global, <<"GRANT ALL ON test.* TO 'mn_login'@'127.0.0.1'">>),
            try
                {Login, Option} = login_opts(?config(driver, Config)),
                [begin
                     {error, {connect_failed, Msg}} =
                         mongoose_wpool:start(rdbms, global, login, [{workers, 1}], Login(P)),
                     ?assertNotEqual(nomatch, binary:match(Msg, Option)),
                     ?assertEqual(nomatch, binary:match(Msg, <<"wrong-one">>))
                 end || P <- ["wrong-one", none]],
                {ok, _} = mongoose_wpool:start(rdbms, global, login, [{workers, 1}],
                                               Login("right-one")),
                ok = mongoose_wpool:stop(rdbms, global, login)
            after
                mongoose_rdbms:sql_query(global, <<"DROP USER IF EXISTS 'mn_login'@'127.0.0.1'">>)
            end
    end.

%% The set-up script makes PostgreSQL ask three roles for a password:
%% mn_scram by SCRAM-SHA-256, mn_md5 by MD5, mn_clear in clear text. The
%% right one logs in; a wrong
%% or missing one fails the start with an error naming the options, never
%% the password.
password_exchanges(Config) ->
    [begin
         Role = atom_to_binary(Tag),
         Create = [<<"SET password_encryption = '">>, Stored, <<"'; DROP ROLE IF EXISTS ">>,
                   Role, <<"; CREATE ROLE ">>, Role, <<" LOGIN PASSWORD 'right-one'">>],
         [_, _, _] = mongoose_rdbms:sql_query(global, iolist_to_binary(Create)),
         Login = fun(none) -> maps:remove(password, (conn_opts(Config))#{username => Role});
                    (P) -> (conn_opts(Config))#{username => Role, password => P}
                 end,
         try
             [begin
                  {error, {connect_failed, Msg}} =
                      mongoose_wpool:start(rdbms, global, Tag, [{workers, 1}], Login(P)),
                  ct:pal("~ts: ~ts", [Tag, Msg]),
                  ?assertNotEqual(nomatch, binary:match(Msg, <<"connection.password">>)),
                  ?assertEqual(nomatch, binary:match(Msg, <<"wrong-one">>))
              end || P <- ["wrong-one", none]],
             {ok, _} = mongoose_wpool:start(rdbms, global, Tag, [{workers, 2}],
                                            Login("right-one")),
             ok = mongoose_wpool:stop(rdbms, global, Tag)
         after
             mongoose_rdbms:sql_query(global, [<<"DROP ROLE IF EXISTS ">>, Role])
         end
     end || {Tag, Stored} <- [{mn_scram, <<"scram-sha-256">>}, {mn_md5, <<"md5">>},
                              {mn_clear, <<"scram-sha-256">>}]].

%% ODBC: what is wrong with a connection string is said at start, without
%% the password.
odbc_bad_settings(Config) ->
    Start = fun(Tag, Opts) ->
                    mongoose_wpool:start(rdbms, global, Tag, [{workers, 1}], Opts)
            end,
    {error, {invalid_config, Missing}} = Start(bad_missing, #{driver => odbc}),
    ?assertNotEqual(nomatch, binary:match(Missing, <<"connection.settings">>)),
    {error, {invalid_config, Extra}} =
        Start(bad_extra, (conn_opts(Config))#{host => "127.0.0.1"}),
    ?assertNotEqual(nomatch, binary:match(Extra, <<"host">>)),
    {error, {connect_failed, NoDsn}} =
        Start(bad_dsn, #{driver => odbc, settings => "DSN=mn_ct_no_such_dsn;PWD=S3cr3t-canary"}),
    ?assertNotEqual(nomatch, binary:match(NoDsn, <<"Data source name not found">>)),
    {error, {connect_failed, NoDriver}} =
        Start(bad_driver, #{driver => odbc,
                            settings => "Driver=/nonexistent/libmn_odbc.so;PWD=S3cr3t-canary"}),
    ?assertNotEqual(nomatch, binary:match(NoDriver, <<"/nonexistent/libmn_odbc.so">>)),
    Unreachable = case ?config(engine, Config) of
                      pgsql -> "Driver={PostgreSQL Unicode};Servername=127.0.0.1;Port=1;"
                               "Database=test;Username=postgres;PWD=S3cr3t-canary";
                      mysql -> "Driver={MariaDB Unicode};Server=127.0.0.1;Port=1;"
                               "User=root;PWD=S3cr3t-canary"
                  end,
    {error, {connect_failed, Refused}} =
        Start(bad_server, #{driver => odbc, settings => Unreachable}),
    ct:pal("~ts~n~ts~n~ts", [NoDsn, NoDriver, Refused]),
    ?assertNotEqual(nomatch, binary:match(Refused, <<"Port=1">>)),
    [?assertEqual(nomatch, binary:match(Msg, <<"S3cr3t-canary">>))
     || Msg <- [NoDsn, NoDriver, Refused]],
    ?assertEqual([{rdbms, global, default}], mongoose_wpool:get_pools()).

%% A DSN-less connection string, a DSN of /etc/odbc.ini and a data source
%% file the tests wrote, to each server; the pool reports its server for
%% escaping.
odbc_connection_strings(Config) ->
    Settings = case ?config(engine, Config) of
                   pgsql -> [file_dsn(Config, mn_ct_pgsql), "DSN=mongoose_pgsql"];
                   mysql -> ["Driver={MariaDB Unicode};Server=127.0.0.1;Port=3306;"
                             "Database=test;User=root", file_dsn(Config, mn_ct_mysql)]
               end,
    [begin
         {ok, _} = mongoose_wpool:start(rdbms, global, conn_string, [{workers, 1}],
                                        #{driver => odbc, settings => S}),
         ?assertEqual({selected, [{1}]},
                      mongoose_rdbms:sql_query(global, conn_string, <<"SELECT 1">>)),
         ok = mongoose_wpool:stop(rdbms, global, conn_string)
     end || S <- Settings],
    ?assertEqual(odbc, mongoose_rdbms:db_engine(global)),
    Bytes = <<0, 1, 255, 39, 92>>,
    B = mongoose_rdbms:use_escaped_binary(mongoose_rdbms:escape_binary(global, Bytes)),
    {updated, 1} = q(["INSERT INTO mn_ct_types (id, b) VALUES (9, ", B, ")"]),
    ?assertEqual({selected, [{Bytes}]}, q(<<"SELECT b FROM mn_ct_types WHERE id = 9">>)).
