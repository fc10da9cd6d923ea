%% @doc MongooseIM's Elasticsearch API on the `elastic' pool `global'/`default'.
%%
%% Arguments and results as in MongooseIM 6.3: JSON objects are maps with
%% binary keys (`null' as `null'); documents and queries are maps (or
%% binaries already holding JSON). `Type' goes into the path only on
%% Elasticsearch 5.x and 6.x; on 7.x, 8.x and OpenSearch the pool uses
%% typeless paths (the version is read from the server at start, and shown
%% by `mongoose_wpool:stats(elastic, global, default)').
%%
%% `{error, Reason}' is one of:
%% <ul>
%% <li>`{Status, Body}': the server answered with a status outside 2xx
%%     (`Status' an integer, `Body' its decoded error object, or the raw
%%     binary when it is not JSON);</li>
%% <li>`timeout': no answer within the pool's `call_timeout';</li>
%% <li>`{bad_response, Msg}': a 2xx answer that is not JSON, or a count
%%     without a count;</li>
%% <li>`{Kind, Msg}' with `Kind' one of `connection_refused', `tls_error',
%%     `connect_failed', `connection_lost': no answer came;</li>
%% <li>`{bad_request, Msg}': the arguments cannot be sent (not text, not JSON);</li>
%% <li>`{pool_not_started, _}', `no_available_workers', `{pool_stopped, _}'.</li>
%% </ul>
-module(mongoose_elasticsearch).
-export([health/0, insert_document/4, search/3, count/3, delete_by_query/3]).

-type index() :: binary().
-type type() :: binary().
-type document() :: map().
-type id() :: binary().
-type query() :: map().
-export_type([index/0, type/0, document/0, id/0, query/0]).

%% @doc The cluster's health (`GET /_cluster/health').
-spec health() -> {ok, map()} | {error, term()}.
health() ->
    call(health).

%% @doc Indexes `Document' under `Id', creating or replacing it.
-spec insert_document(index(), type(), id(), document()) -> {ok, map()} | {error, term()}.
insert_document(Index, Type, Id, Document) ->
    call({insert_document, Index, Type, Id, Document}).

%% @doc Runs a search request body (`#{<<"query">> => ...}') on `Index'.
-spec search(index(), type(), query()) -> {ok, map()} | {error, term()}.
search(Index, Type, SearchQuery) ->
    call({search, Index, Type, SearchQuery}).

%% @doc How many documents of `Index' match.
-spec count(index(), type(), query()) -> {ok, non_neg_integer()} | {error, term()}.
count(Index, Type, SearchQuery) ->
    case call({count, Index, Type, SearchQuery}) of
        {ok, #{<<"count">> := Count}} when is_integer(Count), Count >= 0 -> {ok, Count};
        {ok, Other} -> {error, {bad_response, Other}};
        {error, _} = Err -> Err
    end.

%% @doc Deletes the documents of `Index' that match.
-spec delete_by_query(index(), type(), query()) -> ok | {error, term()}.
delete_by_query(Index, Type, SearchQuery) ->
    case call({delete_by_query, Index, Type, SearchQuery}) of
        {ok, _} -> ok;
        {error, _} = Err -> Err
    end.

call(Request) ->
    try mongoose_wpool:call(elastic, global, default, Request) of
        {error, {request_timeout, _}} -> {error, timeout};
        Result -> Result
    catch
        exit:{timeout, _} -> {error, timeout};
        exit:no_available_workers -> {error, no_available_workers}
    end.
