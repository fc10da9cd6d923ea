%% @doc MongooseIM's HTTP client API on the `http' pools.
%%
%% `get/4' and `post/5' keep MongooseIM 6.3's arguments and results:
%% `{ok, {BinStatusCode, Body}}' for every answer the server gives (any
%% status), or `{error, Reason}':
%%
%% <ul>
%% <li>`request_timeout': no complete answer within the pool's `request_timeout';</li>
%% <li>`pool_timeout': the call waited longer than the pool's `call_timeout';</li>
%% <li>`pool_not_started': there is no such pool (for a host type, nor global);</li>
%% <li>`pool_down': the pool has no worker to take the request, or was stopped;</li>
%% <li>`{connection_refused, Msg}', `{tls_error, Msg}', `{connect_failed, Msg}',
%%     `{connection_lost, Msg}': the request got no answer (see the NIF's http driver);</li>
%% <li>`{bad_request, Msg}': the path, a header or the body cannot be sent.</li>
%% </ul>
%%
%% The pool prepends its `path_prefix' to `Path'.
-module(mongoose_http_client).
-export([get/4, post/5]).

-type result() :: {ok, {binary(), binary()}} | {error, term()}.

-spec get(HostType :: binary() | global, PoolTag :: atom(), Path :: iodata(),
          Headers :: [{iodata(), iodata()}]) -> result().
get(HostType, PoolTag, Path, Headers) ->
    make_request(HostType, PoolTag, <<"GET">>, Path, Headers, <<>>).

-spec post(HostType :: binary() | global, PoolTag :: atom(), Path :: iodata(),
           Headers :: [{iodata(), iodata()}], Query :: iodata()) -> result().
post(HostType, PoolTag, Path, Headers, Query) ->
    make_request(HostType, PoolTag, <<"POST">>, Path, Headers, Query).

make_request(HostType, PoolTag, Method, Path, Headers, Body) ->
    Request = {request, Method, Path, Headers, Body},
    try mongoose_wpool:call(http, HostType, PoolTag, Request) of
        {ok, {Status, _RespHeaders, RespBody}} -> {ok, {Status, RespBody}};
        {error, {request_timeout, _}} -> {error, request_timeout};
        {error, {pool_not_started, _}} -> {error, pool_not_started};
        {error, {pool_stopped, _}} -> {error, pool_down};
        {error, {no_available_workers, _}} -> {error, pool_down};
        {error, Reason} -> {error, Reason}
    catch
        exit:{timeout, _} -> {error, pool_timeout};
        exit:no_available_workers -> {error, pool_down};
        Class:Error -> {error, {Class, Error}}
    end.
