%% @doc MongooseIM's `mongoose_rdbms' query API on `rdbms' pools of the
%% mongoose_native NIF (pgsql and mysql through sqlx, odbc through unixODBC).
%%
%% Exports and result shapes follow MongooseIM 6.3: `{selected, [tuple()]}',
%% `{updated, N}', `{updated, N, [tuple()]}', `{error, duplicate_key}',
%% `{error, Message}' (the server's message as a charlist), `{atomic, R}' and
%% `{aborted, Reason}'. With pgsql, `sql_query' gives every value as a binary
%% and `execute' gives typed values (integers, binaries, `true'/`false',
%% `null'); with mysql the text protocol decodes integers too. With odbc
%% both give values as MongooseIM's ODBC backend does (integers for integer
%% columns but BIGINT, floats, binaries for the rest, `null').
%%
%% Prepared statements are registered once with `prepare/4' (an ETS table)
%% and sent with each `execute'; every connection prepares a statement the
%% first time it runs it and keeps it.
%%
%% Transactions and `sql_dirty' run their fun in the caller, with a
%% connection checked out of the pool for the whole fun (see the NIF's
%% `rdbms' module): the fun's queries, nested transactions included, go to
%% that connection. As in MongooseIM: the fun's result is committed as
%% `{atomic, Result}'; an error or exit rolls back and gives `{aborted,
%% Reason}'; a thrown `{aborted, _}' (what `sql_query_t/1' throws on an SQL
%% error) rolls back and reruns the fun, up to 10 times, then gives `{aborted,
%% Reason}'; any other thrown value is the fun's result and is committed. A
%% caller that dies inside a transaction leaves nothing behind: the handle's
%% destructor rolls back and gives the connection back. Aborts are logged
%% through `mongoose_native_log', at most one line per kind per second.
-module(mongoose_rdbms).

-export([prepare/4,
         prepared/1,
         execute/3, execute/4,
         execute_cast/3, execute_cast/4,
         execute_request/3, execute_request/4,
         execute_wrapped_request/4, execute_wrapped_request/5,
         execute_successfully/3, execute_successfully/4,
         sql_query/2, sql_query/3,
         sql_query_cast/2, sql_query_cast/3,
         sql_query_request/2, sql_query_request/3,
         sql_transaction/2, sql_transaction/3,
         sql_transaction_request/2, sql_transaction_request/3,
         sql_dirty/2, sql_dirty/3,
         sql_query_t/1,
         transaction_with_delayed_retry/3,
         to_bool/1,
         db_engine/1,
         db_type/0,
         use_escaped/1]).
-export([escape_string/1, use_escaped_string/1]).
-export([escape_integer/1, use_escaped_integer/1]).
-export([escape_boolean/1, use_escaped_boolean/1]).
-export([escape_like/1, escape_prepared_like/1, escape_like_prefix/1, use_escaped_like/1]).
-export([escape_binary/2, unescape_binary/2, use_escaped_binary/1]).
-export([escape_null/0, use_escaped_null/1]).
-export([result_to_integer/1, selected_to_integer/1, character_to_integer/1]).
-export([ensure_tables/0]).

-include_lib("kernel/include/logger.hrl").

-define(DEFAULT_POOL_TAG, default).
-define(STATE_KEY, mongoose_rdbms_state).
-define(MAX_TRANSACTION_RESTARTS, 10).
-define(STATEMENTS, prepared_statements).
-define(ENGINES, mongoose_rdbms_engines).
-define(DEFAULT_CALL_TIMEOUT, 60000).

-type host_type() :: mongoose_wpool:host_type().
-type tag() :: mongoose_wpool:tag().
-type request_id() :: reference() | {error, term()}.
-type cast_result() :: ok | {error, term()}.
-type transaction() :: fun(() -> term()) | [iodata()].
-type wrapper() :: fun((fun(() -> query_result())) -> term()).
-type query_name() :: atom().
-type query_params() :: [term()].
-type query_result() :: {selected, [tuple()]} | {updated, non_neg_integer()}
                      | {updated, non_neg_integer(), [tuple()]} | {error, term()}
                      | [query_result()].
-type transaction_result() :: {aborted, _} | {atomic, _} | {error, _}.
-opaque escaped_value() :: {escaped_string | escaped_binary | escaped_integer
                            | escaped_boolean | escaped_null | escaped_like, iodata()}.
-export_type([query_name/0, query_params/0, query_result/0, transaction_result/0,
              escaped_value/0]).

%%--------------------------------------------------------------------
%% Prepared statements
%%--------------------------------------------------------------------

-spec prepare(query_name(), binary() | atom(), [binary() | atom()], iodata()) ->
    {ok, query_name()} | {error, already_exists}.
prepare(Name, Table, Fields, Statement) when is_atom(Table) ->
    prepare(Name, atom_to_binary(Table, utf8), Fields, Statement);
prepare(Name, Table, [Field | _] = Fields, Statement) when is_atom(Field) ->
    prepare(Name, Table, [atom_to_binary(F, utf8) || F <- Fields], Statement);
prepare(Name, Table, Fields, Statement) when is_atom(Name), is_binary(Table) ->
    true = lists:all(fun is_binary/1, Fields),
    ensure_tables(),
    case ets:insert_new(?STATEMENTS, {Name, Table, Fields, iolist_to_binary(Statement)}) of
        true -> {ok, Name};
        false -> {error, already_exists}
    end.

-spec prepared(query_name()) -> boolean().
prepared(Name) ->
    ensure_tables(),
    ets:member(?STATEMENTS, Name).

-spec execute(host_type(), query_name(), query_params()) -> query_result().
execute(HostType, Name, Parameters) ->
    execute(HostType, ?DEFAULT_POOL_TAG, Name, Parameters).

execute(HostType, PoolTag, Name, Parameters)
  when is_atom(PoolTag), is_atom(Name), is_list(Parameters) ->
    sql_call(HostType, PoolTag, {sql_execute, Name, Parameters}).

-spec execute_cast(host_type(), query_name(), query_params()) -> cast_result().
execute_cast(HostType, Name, Parameters) ->
    execute_cast(HostType, ?DEFAULT_POOL_TAG, Name, Parameters).

execute_cast(HostType, PoolTag, Name, Parameters)
  when is_atom(PoolTag), is_atom(Name), is_list(Parameters) ->
    sql_cast(HostType, PoolTag, {sql_execute, Name, Parameters}).

-spec execute_request(host_type(), query_name(), query_params()) -> request_id().
execute_request(HostType, Name, Parameters) ->
    execute_request(HostType, ?DEFAULT_POOL_TAG, Name, Parameters).

execute_request(HostType, PoolTag, Name, Parameters)
  when is_atom(PoolTag), is_atom(Name), is_list(Parameters) ->
    sql_request(HostType, PoolTag, {sql_execute, Name, Parameters}).

-spec execute_wrapped_request(host_type(), query_name(), query_params(), wrapper()) ->
          request_id().
execute_wrapped_request(HostType, Name, Parameters, Wrapper) ->
    execute_wrapped_request(HostType, ?DEFAULT_POOL_TAG, Name, Parameters, Wrapper).

-spec execute_wrapped_request(host_type(), tag(), query_name(), query_params(),
                              wrapper()) -> request_id().
%% The wrapper runs around the execute in a process of its own, whose answer
%% `gen_server:receive_response/2' and `wait_response/2' take.
execute_wrapped_request(HostType, PoolTag, Name, Parameters, Wrapper)
  when is_atom(PoolTag), is_atom(Name), is_list(Parameters), is_function(Wrapper, 1) ->
    Run = fun() -> execute(HostType, PoolTag, Name, Parameters) end,
    case get_state() of
        undefined ->
            async_request(fun() ->
                                  try Wrapper(Run)
                                  catch _:Error ->
                                          ?LOG_ERROR(#{what => sql_execute_wrapped_failed,
                                                       reason => Error, statement_name => Name}),
                                          {error, Error}
                                  end
                          end);
        _State ->
            Wrapper(Run)
    end.

-spec execute_successfully(host_type(), query_name(), query_params()) ->
          {selected, [tuple()]} | {updated, non_neg_integer()}.
execute_successfully(HostType, Name, Parameters) ->
    execute_successfully(HostType, ?DEFAULT_POOL_TAG, Name, Parameters).

%% Like execute/4, but anything other than a result is an error.
execute_successfully(HostType, PoolTag, Name, Parameters) ->
    try execute(HostType, PoolTag, Name, Parameters) of
        {selected, _} = Result -> Result;
        {updated, _} = Result -> Result;
        Other ->
            Log = #{what => sql_execute_failed, host => HostType, statement_name => Name,
                    statement_query => statement_text(Name), statement_params => Parameters,
                    reason => Other},
            ?LOG_ERROR(Log),
            error(Log)
    catch error:Reason:Stacktrace ->
            Log = #{what => sql_execute_failed, host => HostType, statement_name => Name,
                    statement_query => statement_text(Name), statement_params => Parameters,
                    reason => Reason, stacktrace => Stacktrace},
            ?LOG_ERROR(Log),
            erlang:raise(error, Reason, Stacktrace)
    end.

%%--------------------------------------------------------------------
%% Queries
%%--------------------------------------------------------------------

-spec sql_query(host_type(), iodata()) -> query_result().
sql_query(HostType, Query) ->
    sql_query(HostType, ?DEFAULT_POOL_TAG, Query).

sql_query(HostType, PoolTag, Query) ->
    sql_call(HostType, PoolTag, {sql_query, Query}).

-spec sql_query_request(host_type(), iodata()) -> request_id().
sql_query_request(HostType, Query) ->
    sql_query_request(HostType, ?DEFAULT_POOL_TAG, Query).

sql_query_request(HostType, PoolTag, Query) ->
    sql_request(HostType, PoolTag, {sql_query, Query}).

-spec sql_query_cast(host_type(), iodata()) -> cast_result().
sql_query_cast(HostType, Query) ->
    sql_query_cast(HostType, ?DEFAULT_POOL_TAG, Query).

sql_query_cast(HostType, PoolTag, Query) ->
    sql_cast(HostType, PoolTag, {sql_query, Query}).

-spec sql_query_t(iodata()) -> query_result().
%% Inside a transaction: an SQL error aborts it (the transaction is rerun).
sql_query_t(Query) ->
    State = case get_state() of
                undefined -> error({not_in_transaction, Query});
                S -> S
            end,
    QRes = tx_call(State, {sql_query, Query}),
    case QRes of
        {error, Reason} ->
            throw({aborted, #{reason => Reason, sql_query => Query}});
        _ when is_list(QRes) ->
            case lists:keyfind(error, 1, QRes) of
                {error, Reason} -> throw({aborted, #{reason => Reason, sql_query => Query}});
                false -> QRes
            end;
        _ ->
            QRes
    end.

%%--------------------------------------------------------------------
%% Transactions
%%--------------------------------------------------------------------

-spec sql_transaction(host_type(), transaction()) -> transaction_result().
sql_transaction(HostType, F) ->
    sql_transaction(HostType, ?DEFAULT_POOL_TAG, F).

sql_transaction(HostType, PoolTag, Queries) when is_atom(PoolTag), is_list(Queries) ->
    sql_transaction(HostType, PoolTag, fun() -> lists:map(fun sql_query_t/1, Queries) end);
sql_transaction(HostType, PoolTag, F) when is_atom(PoolTag), is_function(F, 0) ->
    case get_state() of
        undefined -> outer_transaction(HostType, PoolTag, F);
        _State -> inner_transaction(F)
    end.

-spec sql_transaction_request(host_type(), transaction()) -> request_id().
sql_transaction_request(HostType, Queries) ->
    sql_transaction_request(HostType, ?DEFAULT_POOL_TAG, Queries).

%% The transaction runs in a process of its own; the answer comes as for
%% `gen_server:send_request/2'.
sql_transaction_request(HostType, PoolTag, Queries) when is_atom(PoolTag) ->
    case get_state() of
        undefined -> async_request(fun() -> sql_transaction(HostType, PoolTag, Queries) end);
        _State -> sql_transaction(HostType, PoolTag, Queries)
    end.

-spec transaction_with_delayed_retry(host_type(), fun(() -> term()),
                                     #{retries := non_neg_integer(), delay := non_neg_integer(),
                                       atom() => term()}) -> {atomic, term()}.
%% Reruns an aborted transaction `retries' times, `delay' ms apart.
transaction_with_delayed_retry(HostType, F, Info) ->
    Retries = maps:get(retries, Info),
    Delay = maps:get(delay, Info),
    delayed_retry(HostType, F, Retries, Delay, Info).

delayed_retry(HostType, F, Retries, Delay, Info) ->
    Result = sql_transaction(HostType, F),
    case Result of
        {atomic, _} ->
            Result;
        {aborted, Reason} when Retries > 0 ->
            mongoose_native_log:log(warning, Info#{what => rdbms_transaction_aborted,
                                                   text => <<"Transaction aborted. Restart">>,
                                                   reason => Reason, retries_left => Retries}),
            timer:sleep(Delay),
            delayed_retry(HostType, F, Retries - 1, Delay, Info);
        _ ->
            Err = Info#{what => rdbms_transaction_failed,
                        text => <<"Transaction failed. Do not restart">>, reason => Result},
            mongoose_native_log:log(error, Err),
            erlang:error(Err)
    end.

-spec sql_dirty(host_type(), fun(() -> T)) -> T.
sql_dirty(HostType, F) ->
    sql_dirty(HostType, ?DEFAULT_POOL_TAG, F).

%% Runs F with a connection checked out for it, without a transaction.
sql_dirty(HostType, PoolTag, F) when is_atom(PoolTag), is_function(F, 0) ->
    Result = case get_state() of
                 undefined ->
                     with_checkout(HostType, PoolTag, fun(_State) -> dirty(F) end,
                                   fun(Reason) -> {error, Reason} end, true);
                 _State ->
                     dirty(F)
             end,
    case Result of
        {ok, Value} -> Value;
        {error, Error} -> throw(Error)
    end.

dirty(F) ->
    try {ok, F()}
    catch _:Reason -> {error, Reason}
    end.

outer_transaction(HostType, PoolTag, F) ->
    with_checkout(HostType, PoolTag,
                  fun(State) -> transaction(F, ?MAX_TRANSACTION_RESTARTS, State) end,
                  fun(Reason) -> {aborted, Reason} end, false).

%% Checks a connection out, runs Fun with it as the process's transaction
%% state, and gives it back (rolling back if Fun did not finish).
with_checkout(HostType, PoolTag, Fun, OnError, RollbackAtEnd) ->
    case checkout(HostType, PoolTag) of
        {ok, State = #{tx := Tx}} ->
            put_state(State),
            try Fun(State) of
                Result ->
                    mongoose_native_nif:lease_release(Tx, RollbackAtEnd),
                    Result
            catch Class:Reason:Stacktrace ->
                    mongoose_native_nif:lease_release(Tx, true),
                    erlang:raise(Class, Reason, Stacktrace)
            after
                erase_state()
            end;
        {error, Reason} ->
            OnError(Reason)
    end.

transaction(F, Restarts, State) ->
    case tx_call(State, {sql_query, <<"BEGIN">>}) of
        {error, Reason} ->
            rollback(State),
            {aborted, Reason};
        _ ->
            case apply_transaction_function(F) of
                {aborted, _} when Restarts > 0 ->
                    rollback(State),
                    transaction(F, Restarts - 1, State);
                {aborted, Abort} ->
                    rollback(State),
                    {aborted, restarts_exceeded(Abort)};
                {'EXIT', Reason} ->
                    rollback(State),
                    {aborted, Reason};
                Result ->
                    case tx_call(State, {sql_query, <<"COMMIT">>}) of
                        {error, Reason} ->
                            rollback(State),
                            {aborted, Reason};
                        _ ->
                            {atomic, Result}
                    end
            end
    end.

rollback(State) ->
    tx_call(State, {sql_query, <<"ROLLBACK">>}).

%% Logs the last abort of a transaction and gives the reason it returns:
%% the SQL error of a failed `sql_query_t', or what the fun threw.
-spec restarts_exceeded(term()) -> term().
restarts_exceeded(Abort) ->
    {Reason, Last} = case Abort of
                         #{reason := R, sql_query := Query} ->
                             {R, #{last_abort_reason => R, last_sql_query => query_text(Query)}};
                         _ ->
                             {Abort, #{last_abort_reason => Abort}}
                     end,
    mongoose_native_log:log(error, Last#{what => rdbms_sql_transaction_restarts_exceeded,
                                         restarts => ?MAX_TRANSACTION_RESTARTS}),
    Reason.

%% A query that is not iodata (the NIF refused it) is logged as it is.
-spec query_text(term()) -> term().
query_text(Query) ->
    try iolist_to_binary(Query)
    catch error:badarg -> Query
    end.

apply_transaction_function(F) ->
    try F()
    catch
        throw:Thrown -> Thrown;
        Class:Reason:Stacktrace ->
            mongoose_native_log:log(error, #{what => rdbms_outer_transaction_failed,
                                             class => Class, reason => Reason,
                                             stacktrace => Stacktrace}),
            {'EXIT', Reason}
    end.

%% A transaction inside a transaction only runs its fun (never rerun).
inner_transaction(F) ->
    case catch F() of
        {aborted, Reason} -> {aborted, Reason};
        {'EXIT', Reason} -> {'EXIT', Reason};
        {atomic, Result} -> {atomic, Result};
        Result -> {atomic, Result}
    end.

checkout(HostType, PoolTag) ->
    case mongoose_wpool:get_pool_handle(rdbms, HostType, PoolTag) of
        {error, _} = NotStarted ->
            NotStarted;
        {ok, #{res := Res, call_timeout := Timeout, atom_name := Name}} ->
            %% Asked before the lease: a one-worker pool could not answer it after.
            Engine = pool_engine(HostType, PoolTag),
            Checkout = fun(Pid, Ref) -> mongoose_native_nif:lease(Res, -1, Pid, Ref) end,
            case mongoose_native_nif:call(Checkout, Timeout) of
                {reply, {ok, Tx}} ->
                    {ok, #{tx => Tx, engine => Engine, timeout => Timeout}};
                {reply, {error, _} = Error} ->
                    Error;
                timeout ->
                    exit({timeout, {?MODULE, sql_transaction, [Name, Timeout]}});
                {error, {no_available_workers, _}} ->
                    exit(no_available_workers);
                {error, _} = Error ->
                    Error
            end
    end.

tx_call(State = #{tx := Tx, timeout := Timeout}, Msg) ->
    Request = request(Msg, State),
    Call = fun(Pid, Ref) -> mongoose_native_nif:lease_call(Tx, Request, Pid, Ref) end,
    case mongoose_native_nif:call(Call, Timeout) of
        {reply, Result} -> Result;
        timeout -> exit({timeout, {?MODULE, sql_query, [Timeout]}});
        {error, _} = Error -> Error
    end.

%%--------------------------------------------------------------------
%% Dispatch
%%--------------------------------------------------------------------

sql_call(HostType, PoolTag, Msg) ->
    case get_state() of
        undefined -> mongoose_wpool:call(rdbms, HostType, PoolTag, request(Msg, undefined));
        State -> nested_op(Msg, State)
    end.

sql_cast(HostType, PoolTag, Msg) ->
    case get_state() of
        undefined -> mongoose_wpool:cast(rdbms, HostType, PoolTag, request(Msg, undefined));
        State -> nested_op(Msg, State)
    end.

sql_request(HostType, PoolTag, Msg) ->
    case get_state() of
        undefined ->
            mongoose_wpool:send_request(rdbms, HostType, PoolTag, request(Msg, undefined));
        State ->
            nested_op(Msg, State)
    end.

%% A query made while the process holds a connection goes to that connection.
nested_op({sql_query, _} = Msg, State) ->
    tx_call(State, Msg);
nested_op({sql_execute, Name, Params} = Msg, State) ->
    case tx_call(State, Msg) of
        {error, Reason} ->
            throw({aborted, #{reason => Reason, statement_name => Name, params => Params}});
        Result ->
            Result
    end.

request({sql_query, Query}, _State) ->
    {sql_query, Query};
request({sql_execute, Name, Params}, _State) ->
    {sql_execute, Name, statement(Name), Params}.

statement(Name) ->
    case catch ets:lookup(?STATEMENTS, Name) of
        [{_, _Table, _Fields, Statement}] -> Statement;
        _ -> error({lookup_statement_failed, Name})
    end.

statement_text(Name) ->
    case catch ets:lookup(?STATEMENTS, Name) of
        [{_, _Table, _Fields, Statement}] -> Statement;
        _ -> not_found
    end.

%% Runs Fun in a new process; its result answers like a gen_server request.
async_request(Fun) ->
    Caller = self(),
    Pid = spawn(fun() ->
                        receive
                            {go, ReqId} -> Caller ! {[alias | ReqId], Fun()}
                        end
                end),
    ReqId = erlang:monitor(process, Pid, [{alias, demonitor}]),
    Pid ! {go, ReqId},
    ReqId.

%%--------------------------------------------------------------------
%% Engine
%%--------------------------------------------------------------------

%% `pgsql', `mysql' or `odbc': the driver of the host type's default rdbms
%% pool (the global one when it has none), `undefined' without a pool.
-spec db_engine(global | binary()) -> pgsql | mysql | odbc | undefined.
db_engine(HostType) ->
    case engine_info(HostType) of
        {odbc, _Server} -> odbc;
        Engine -> Engine
    end.

%% The server the SQL goes to, for escaping: an odbc pool's is told by its
%% ODBC driver (`pgsql', `mysql' or `other').
db_server(HostType) ->
    case engine_info(HostType) of
        {odbc, Server} -> Server;
        Engine -> Engine
    end.

engine_info(HostType) ->
    case get_state() of
        #{engine := Engine} -> Engine;
        undefined -> pool_engine(HostType, ?DEFAULT_POOL_TAG)
    end.

%% Only ODBC to MSSQL was special; pgsql and mysql are `generic'.
-spec db_type() -> generic.
db_type() ->
    generic.

pool_engine(HostType, PoolTag) ->
    case mongoose_wpool:get_pool_handle(rdbms, HostType, PoolTag) of
        {error, _} ->
            undefined;
        {ok, #{name := Name, res := Res}} ->
            %% Keyed by the resource too: a restarted pool is asked again.
            Pool = {Name, Res},
            ensure_tables(),
            case ets:lookup(?ENGINES, Pool) of
                [{_, Engine}] ->
                    Engine;
                [] ->
                    case catch mongoose_wpool:call(rdbms, HostType, PoolTag, rdbms_engine) of
                        Engine when Engine =:= pgsql; Engine =:= mysql;
                                    is_tuple(Engine), element(1, Engine) =:= odbc ->
                            ets:insert(?ENGINES, {Pool, Engine}),
                            Engine;
                        _ ->
                            undefined
                    end
            end
    end.

%%--------------------------------------------------------------------
%% Escaping
%%--------------------------------------------------------------------

%% Only for binaries; escapes the content for `LIKE ? ESCAPE '$'' in a
%% prepared statement ('%' goes around it afterwards). Not safe elsewhere.
-spec escape_prepared_like(binary()) -> binary().
escape_prepared_like(S) ->
    << <<(escape_prepared_like_char(C))/binary>> || <<C>> <= S >>.

escape_prepared_like_char($%) -> <<"$%">>;
escape_prepared_like_char($_) -> <<"$_">>;
escape_prepared_like_char($$) -> <<"$$">>;
escape_prepared_like_char(C) -> <<C>>.

-spec escape_like(binary() | string()) -> escaped_value().
%% A LIKE pattern matching S anywhere.
escape_like(S) ->
    {escaped_like, [$', $%, escape_like_internal(S), $%, $']}.

-spec escape_like_prefix(binary() | string()) -> escaped_value().
%% A LIKE pattern matching what starts with S.
escape_like_prefix(S) ->
    {escaped_like, [$', escape_like_internal(S), $%, $']}.

-spec escape_binary(host_type(), binary()) -> escaped_value().
escape_binary(HostType, Bin) when is_binary(Bin) ->
    case db_server(HostType) of
        mysql -> {escaped_binary, [<<"X'">>, binary:encode_hex(Bin), <<"'">>]};
        _ -> {escaped_binary, [<<"decode('">>, base64:encode(Bin), <<"','base64')">>]}
    end.

-spec unescape_binary(host_type(), binary()) -> binary().
%% pgsql's text protocol gives bytea as `\x' followed by hex.
unescape_binary(HostType, Bin) when is_binary(Bin) ->
    case {db_server(HostType), Bin} of
        {mysql, _} -> Bin;
        {_, <<"\\x", Hex/binary>>} -> binary:decode_hex(Hex);
        _ -> Bin
    end.

-spec escape_string(binary() | string()) -> escaped_value().
%% A quoted string literal (backslash escapes: pgsql connections run with
%% standard_conforming_strings off, as MongooseIM's do).
escape_string(S) ->
    {escaped_string, [$', escape_characters(S), $']}.

-spec escape_integer(integer()) -> escaped_value().
escape_integer(I) when is_integer(I) ->
    {escaped_integer, integer_to_binary(I)}.

-spec escape_boolean(boolean()) -> escaped_value().
%% Quoted, so that pgsql takes it for a boolean column.
escape_boolean(true) -> {escaped_boolean, "'1'"};
escape_boolean(false) -> {escaped_boolean, "'0'"}.

-spec escape_null() -> escaped_value().
escape_null() ->
    {escaped_null, "null"}.

-spec use_escaped_string(escaped_value()) -> iodata().
use_escaped_string({escaped_string, S}) -> S;
use_escaped_string(X) -> escape_failure(use_escaped_string, X).

-spec use_escaped_binary(escaped_value()) -> iodata().
use_escaped_binary({escaped_binary, S}) -> S;
use_escaped_binary(X) -> escape_failure(use_escaped_binary, X).

-spec use_escaped_like(escaped_value()) -> iodata().
use_escaped_like({escaped_like, S}) -> S;
use_escaped_like(X) -> escape_failure(use_escaped_like, X).

-spec use_escaped_integer(escaped_value()) -> iodata().
use_escaped_integer({escaped_integer, S}) -> S;
use_escaped_integer(X) -> escape_failure(use_escaped_integer, X).

-spec use_escaped_boolean(escaped_value()) -> iodata().
use_escaped_boolean({escaped_boolean, S}) -> S;
use_escaped_boolean(X) -> escape_failure(use_escaped_boolean, X).

-spec use_escaped_null(escaped_value()) -> iodata().
use_escaped_null({escaped_null, S}) -> S;
use_escaped_null(X) -> escape_failure(use_escaped_null, X).

-spec use_escaped(escaped_value()) -> iodata().
%% Any escaped value but a LIKE pattern.
use_escaped({escaped_string, _} = X) -> use_escaped_string(X);
use_escaped({escaped_binary, _} = X) -> use_escaped_binary(X);
use_escaped({escaped_integer, _} = X) -> use_escaped_integer(X);
use_escaped({escaped_boolean, _} = X) -> use_escaped_boolean(X);
use_escaped({escaped_null, _} = X) -> use_escaped_null(X);
use_escaped(X) -> escape_failure(use_escaped, X).

escape_failure(Function, X) ->
    ?LOG_ERROR(#{what => rdbms_use_escaped_failure, value => X,
                 stacktrace => erlang:process_info(self(), current_stacktrace)}),
    erlang:error({Function, X}).

escape_like_internal(S) when is_binary(S) ->
    list_to_binary(escape_like_internal(binary_to_list(S)));
escape_like_internal(S) when is_list(S) ->
    [escape_like_character(C) || C <- S].

escape_characters(S) when is_binary(S) ->
    list_to_binary(escape_characters(binary_to_list(S)));
escape_characters(S) when is_list(S) ->
    [escape_character(C) || C <- S].

escape_like_character($%) -> "\\%";
escape_like_character($_) -> "\\_";
escape_like_character(C) -> escape_character(C).

escape_character($\0) -> "\\0";
escape_character($\n) -> "\\n";
escape_character($\t) -> "\\t";
escape_character($\b) -> "\\b";
escape_character($\r) -> "\\r";
escape_character($') -> "''";
escape_character($") -> "\\\"";
escape_character($\\) -> "\\\\";
escape_character(C) -> C.

%%--------------------------------------------------------------------
%% Results
%%--------------------------------------------------------------------

-spec result_to_integer(binary() | integer()) -> integer().
result_to_integer(Int) when is_integer(Int) -> Int;
result_to_integer(Bin) when is_binary(Bin) -> binary_to_integer(Bin).

-spec selected_to_integer({selected, [{binary() | integer()}]}) -> integer().
selected_to_integer({selected, [{Value}]}) ->
    result_to_integer(Value).

-spec character_to_integer(binary() | integer()) -> integer().
%% A CHAR(1) column's value as an integer.
character_to_integer(<<X>>) -> X;
character_to_integer(X) when is_integer(X) -> X.

%% pgsql's text protocol gives booleans as "t" and "f".
-spec to_bool(term()) -> boolean().
to_bool(B) when is_binary(B) -> to_bool(binary_to_list(B));
to_bool("t") -> true;
to_bool("true") -> true;
to_bool("1") -> true;
to_bool(true) -> true;
to_bool(1) -> true;
to_bool(_) -> false.

%%--------------------------------------------------------------------
%% State and tables
%%--------------------------------------------------------------------

get_state() -> get(?STATE_KEY).
put_state(State) -> put(?STATE_KEY, State).
erase_state() -> erase(?STATE_KEY).

-spec ensure_tables() -> ok.
%% The prepared statement and engine tables, owned by a process of their
%% own so that they outlive whoever registered the first statement.
ensure_tables() ->
    case ets:whereis(?STATEMENTS) of
        undefined ->
            spawn(fun table_owner/0),
            wait_for_tables(1000);
        _ ->
            ok
    end.

table_owner() ->
    try register(mongoose_rdbms_tables, self()) of
        true ->
            ets:new(?ENGINES, [named_table, public, set]),
            ets:new(?STATEMENTS, [named_table, public, set, {read_concurrency, true}]),
            receive stop -> ok end
    catch error:badarg ->
            ok % another process owns them
    end.

wait_for_tables(0) ->
    error(rdbms_tables_not_created);
wait_for_tables(N) ->
    case ets:whereis(?STATEMENTS) of
        undefined -> timer:sleep(1), wait_for_tables(N - 1);
        _ -> ok
    end.
