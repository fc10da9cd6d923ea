%% @doc MongooseIM's older LDAP API (`eldap_pool', as ejabberd_auth_ldap
%% calls it), on `ldap' pools: binaries or strings in, binaries out. Each
%% function sends the `{EldapFunction, Args}' request MongooseIM 6.3's
%% `mongoose_ldap_worker' takes; `PoolName' is `{HostType, Tag}'.
%%
%% `bind/3' checks a user's password by binding as them. It runs on a lease
%% of one connection, released with a reset that binds the connection back
%% as the pool's root DN, so no other caller ever uses a connection bound
%% as that user.
-module(eldap_pool).
-export([bind/3, search/2, delete/2, add/3, modify_passwd/3]).

-type pool_name() :: {mongoose_wpool:host_type(), mongoose_wpool:tag()}.
-type text() :: binary() | string().
-export_type([pool_name/0]).

-spec bind(pool_name(), text(), text()) -> ok | {error, term()}.
bind({HostType, Tag}, DN, Passwd) ->
    Request = {simple_bind, [to_list(DN), to_list(Passwd)]},
    case mongoose_wpool:get_pool_handle(ldap, HostType, Tag) of
        {ok, #{res := Res, call_timeout := Timeout, atom_name := Name}} ->
            Lease = fun(Pid, Ref) -> mongoose_native_nif:lease(Res, -1, Pid, Ref) end,
            case answer(mongoose_native_nif:call(Lease, Timeout), Name, Timeout) of
                {ok, L} ->
                    try on_lease(L, Request, Name, Timeout)
                    after mongoose_native_nif:lease_release(L, true)
                    end;
                Error ->
                    Error
            end;
        Error ->
            Error
    end.

on_lease(Lease, Request, Name, Timeout) ->
    Call = fun(Pid, Ref) -> mongoose_native_nif:lease_call(Lease, Request, Pid, Ref) end,
    answer(mongoose_native_nif:call(Call, Timeout), Name, Timeout).

%% What mongoose_wpool:call/4 would give.
answer({reply, {error, {no_connection, _}}}, _Name, _Timeout) -> {error, not_connected};
answer({reply, Result}, _Name, _Timeout) -> Result;
answer(timeout, Name, Timeout) -> exit({timeout, {mongoose_wpool, call, [Name, Timeout]}});
answer({error, {no_available_workers, _}}, _Name, _Timeout) -> exit(no_available_workers);
answer({error, _} = Error, _Name, _Timeout) -> Error.

%% @doc eldap's search options, `base' and `attributes' as binaries or
%% strings; the result's names and values come back as binaries, without
%% the `{ok, _}' around it, as MongooseIM's eldap_pool gives it.
-spec search(pool_name(), [{atom(), term()}]) -> tuple() | {error, term()}.
search(PoolName, Opts) ->
    case do_request(PoolName, {search, [[search_opt(O) || O <- Opts]]}) of
        {ok, {eldap_search_result, Entries, Refs, Controls}} ->
            {eldap_search_result, [entry(E) || E <- Entries], Refs, Controls};
        Other ->
            Other
    end.

search_opt({base, Base}) -> {base, to_list(Base)};
search_opt({attributes, Attrs}) -> {attributes, [to_list(A) || A <- Attrs]};
search_opt(Opt) -> Opt.

entry({eldap_entry, DN, Attrs}) ->
    {eldap_entry, list_to_binary(DN),
     [{list_to_binary(A), [list_to_binary(V) || V <- Vs]} || {A, Vs} <- Attrs]}.

%% @doc Answers `not_exists' when there is no such entry (`noSuchObject').
-spec delete(pool_name(), text()) -> ok | not_exists | {error, term()}.
delete(PoolName, DN) ->
    case do_request(PoolName, {delete, [to_list(DN)]}) of
        {error, noSuchObject} -> not_exists;
        Other -> Other
    end.

-spec add(pool_name(), text(), [{text(), [text()]}]) -> ok | {error, term()}.
add(PoolName, DN, Attrs) ->
    Attrs1 = [{to_list(A), [to_list(V) || V <- Vs]} || {A, Vs} <- Attrs],
    do_request(PoolName, {add, [to_list(DN), Attrs1]}).

%% @doc An empty password asks the server to generate one: `{ok, Generated}'.
-spec modify_passwd(pool_name(), text(), text()) -> ok | {ok, string()} | {error, term()}.
modify_passwd(PoolName, DN, Passwd) ->
    do_request(PoolName, {modify_password, [to_list(DN), to_list(Passwd)]}).

do_request({HostType, Tag}, Request) ->
    mongoose_wpool:call(ldap, HostType, Tag, Request).

to_list(B) when is_binary(B) -> binary_to_list(B);
to_list(L) -> L.
