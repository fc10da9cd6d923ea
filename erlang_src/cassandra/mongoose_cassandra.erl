%% @doc MongooseIM 6.3's Cassandra API on the `cassandra' pools
%% (`global'/`PoolName'), with queries declared by callback modules
%% (`Module:prepared_queries() -> [{QueryName, CQL}]').
%%
%% Rows are maps from column names (atoms) to values as cqerl gave them
%% (text and blobs as binaries, integers, timestamps in milliseconds, uuids
%% as 16-byte binaries, `null'); parameters are maps or `[{Name, Value}]'
%% lists named after the query's markers (the column for `?', `Name' for
%% `:Name', `'[limit]'' for `LIMIT ?'). A JID given as `UserJID' picks the
%% worker by its hash, so one user's requests keep their order.
%%
%% `{error, Reason}' is one of:
%% <ul>
%% <li>`{Code, Message, Kind}': the server's error (`Code' as in the native
%%     protocol, e.g. 16#2200 and `invalid'), after MongooseIM's retries;</li>
%% <li>`{Kind, Msg}' with `Kind' one of `connection_lost', `no_connection',
%%     `timeout', `server_error': no usable answer came;</li>
%% <li>`{bad_request, Msg}': the parameters do not fit the query's markers;</li>
%% <li>`{pool_not_started, _}'.</li>
%% </ul>
%% A call that passes the pool's `call_timeout' exits as a gen_server call
%% would, as in MongooseIM.
-module(mongoose_cassandra).

-export([cql_read/5, cql_foldl/7, cql_write/5, cql_write_async/5]).
-export([now_timestamp/0]).
-export([prepared_queries/0, total_count_query_cql/1, test_query_sql/0]).
-export([test_query/1, test_query/2, total_count_query/2]).

-define(WRITE_RETRY_COUNT, 3).
-define(READ_RETRY_COUNT, 3).

-type row() :: #{atom() => term()}.
-type rows() :: [row()].
-type parameters() :: proplists:proplist() | row().
-type fold_fun() :: fun((Page :: rows(), fold_accumulator()) -> fold_accumulator()).
-type fold_accumulator() :: any().
-type pool_name() :: atom().
-type query_name() :: atom() | {atom(), atom()}.
-type user_jid() :: term() | undefined.

-export_type([pool_name/0, query_name/0]).
-export_type([row/0, rows/0, parameters/0, fold_fun/0, fold_accumulator/0]).

-callback prepared_queries() -> list({term(), string()}).

%% @doc Writes `Rows' with the query, in unlogged batches of 20 at
%% consistency ONE; a batch the server finds too large is halved and sent
%% again, timeouts and lost connections are retried (3 retries in all).
-spec cql_write(pool_name(), user_jid(), module(), query_name(), [parameters()]) ->
          ok | {error, term()}.
cql_write(PoolName, UserJID, Module, QueryName, Rows) ->
    Request = {write, query(Module, QueryName), Rows, #{retry => ?WRITE_RETRY_COUNT}},
    call(PoolName, UserJID, Request).

%% @doc As `cql_write/5', without waiting for the outcome.
-spec cql_write_async(pool_name(), user_jid(), module(), query_name(), [parameters()]) ->
          ok | {error, term()}.
cql_write_async(PoolName, UserJID, Module, QueryName, Rows) ->
    Request = {write, query(Module, QueryName), Rows, #{retry => ?WRITE_RETRY_COUNT}},
    case UserJID of
        undefined -> mongoose_wpool:cast(cassandra, global, PoolName, Request);
        _ -> mongoose_wpool:cast(cassandra, global, PoolName, UserJID, Request)
    end.

%% @doc Every row the query selects, all pages of it.
-spec cql_read(pool_name(), user_jid(), module(), query_name(), parameters()) ->
          {ok, rows()} | {error, term()}.
cql_read(PoolName, UserJID, Module, QueryName, Params) ->
    call(PoolName, UserJID, {read, query(Module, QueryName), Params,
                             #{retry => ?READ_RETRY_COUNT}}).

%% @doc Folds `Fun' over the result's pages (100 rows at most each), one
%% page fetched at a time with the paging state: a call per page, as
%% MongooseIM's worker answered `{partial, ...}' and was called again to
%% continue, so `Fun' runs in the caller between the pages.
-spec cql_foldl(pool_name(), user_jid(), module(), query_name(), parameters(),
                fold_fun(), fold_accumulator()) ->
          {ok, fold_accumulator()} | {error, term()}.
cql_foldl(PoolName, UserJID, Module, QueryName, Params, Fun, AccIn) ->
    foldl_pages(PoolName, UserJID, query(Module, QueryName), Params, undefined, Fun, AccIn).

foldl_pages(PoolName, UserJID, Query, Params, State, Fun, Acc) ->
    Request = {read_page, Query, Params, State, #{retry => ?READ_RETRY_COUNT}},
    case call(PoolName, UserJID, Request) of
        {ok, Rows, undefined} ->
            {ok, Fun(Rows, Acc)};
        {ok, Rows, Next} ->
            foldl_pages(PoolName, UserJID, Query, Params, Next, Fun, Fun(Rows, Acc));
        {error, _} = Error ->
            Error
    end.

%% @doc The time in microseconds, as MongooseIM's Cassandra modules stamp rows.
-spec now_timestamp() -> integer().
now_timestamp() ->
    os:system_time(microsecond).

%% Test queries, as in MongooseIM

-spec prepared_queries() -> [{term(), string()}].
prepared_queries() ->
    [{test_query, test_query_sql()}] ++
        [{{total_count_query, T}, total_count_query_cql(T)} || T <- tables()].

-spec test_query_sql() -> string().
test_query_sql() ->
    "SELECT now() FROM system.local".

-spec total_count_query_cql(atom()) -> string().
total_count_query_cql(T) when is_atom(T) ->
    "SELECT COUNT(*) FROM " ++ atom_to_list(T).

-spec test_query(pool_name()) -> ok | {error, term()}.
test_query(PoolName) ->
    test_query(PoolName, undefined).

-spec test_query(pool_name(), user_jid()) -> ok | {error, term()}.
test_query(PoolName, UserJID) ->
    try cql_read(PoolName, UserJID, ?MODULE, test_query, []) of
        {ok, _} -> ok;
        {error, Reason} -> {error, Reason}
    catch
        Class:Reason -> {error, {Class, Reason}}
    end.

-spec total_count_query(pool_name(), atom()) -> non_neg_integer().
total_count_query(PoolName, Table) ->
    {ok, [#{count := Count}]} =
        cql_read(PoolName, undefined, ?MODULE, {total_count_query, Table}, []),
    Count.

tables() ->
    [mam_message, mam_muc_message, mam_config].

%% Internals

query(Module, QueryName) ->
    case lists:keyfind(QueryName, 1, Module:prepared_queries()) of
        {_, CQL} -> unicode:characters_to_binary(CQL);
        false -> erlang:error({unknown_query, Module, QueryName})
    end.

call(PoolName, undefined, Request) ->
    mongoose_wpool:call(cassandra, global, PoolName, Request);
call(PoolName, UserJID, Request) ->
    mongoose_wpool:call(cassandra, global, PoolName, UserJID, Request).
