%% @doc MongooseIM 6.3's mod_global_distrib_mapping on top of the NIF: the
%% session table in Redis (stock layout, see CONTRACTS.md section 3), the
%% local cache in front of it and the refresher all live in Rust; this module
%% keeps the public functions and the hook handlers.
%%
%% Lookups (`for_jid', `for_domain') answer `{ok, Host}' or `error'; a Redis
%% failure is logged and answers `error' (not cached). Writes answer `ok';
%% a failed write is logged, and the refresher writes the entry again.
-module(mod_global_distrib_mapping).

-export([start/2, stop/1, hooks/1, deps/2]).
-export([for_domain/1, insert_for_domain/1, insert_for_domain/2, insert_for_domain/3,
         cache_domain/2, delete_for_domain/1, all_domains/0, public_domains/0]).
-export([for_jid/1, insert_for_jid/1, cache_jid/2, delete_for_jid/1, clear_cache/1]).
-export([register_subhost/3, unregister_subhost/3, packet_to_component/3,
         session_opened/3, session_closed/3]).
-export([endpoints/1, hosts/0, nodes/1]).
-export([metrics/0, refresh/0, cache_sizes/0, opts/0, instrumentation/1]).

-define(OPTS_KEY, {?MODULE, opts}).
-define(CALL_TIMEOUT, 10000).
-define(START_TIMEOUT, 120000).

-type endpoint() :: {inet:ip_address() | string(), inet:port_number()}.
-type jid() :: tuple().

%%--------------------------------------------------------------------
%% gen_mod API
%%--------------------------------------------------------------------

%% @doc Validates the module options (seed 004), checks that `global_host'
%% and `local_host' are served domains, writes this node's entries and starts
%% the refresher. `{error, {Kind, Message}}' on failure, Kind one of
%% `invalid_config', `check_host_failed', `pool_not_started', ...
-spec start(term(), map() | list()) -> ok | {error, term()}.
start(HostType, Opts) ->
    Node = mod_global_distrib_adapter:node_name(),
    Hosts = mod_global_distrib_adapter:hosts(),
    Pools = mongoose_wpool:get_pool_resources(redis, global),
    Start = fun(Pid, Tag) -> mongoose_native_nif:gd_start(Opts, Hosts, Node, Pools, Pid, Tag) end,
    case mongoose_native_nif:call(Start, ?START_TIMEOUT) of
        {reply, {ok, Validated}} ->
            persistent_term:put(?OPTS_KEY, Validated#{host_type => HostType}),
            mod_global_distrib_adapter:add_hooks(hooks(HostType)),
            ok;
        {reply, {error, _} = Error} ->
            Error;
        timeout ->
            mongoose_native_nif:gd_stop(),
            {error, {timeout, <<"mod_global_distrib_mapping did not start in time">>}};
        {error, _} = Error ->
            Error
    end.

-spec stop(term()) -> ok.
stop(_HostType) ->
    case persistent_term:get(?OPTS_KEY, undefined) of
        #{host_type := HostType} ->
            mod_global_distrib_adapter:delete_hooks(hooks(HostType)),
            persistent_term:erase(?OPTS_KEY);
        undefined ->
            ok
    end,
    mongoose_native_nif:gd_stop(),
    ok.

deps(_HostType, _Opts) ->
    [].

%% @doc MongooseIM 6.3's events of the session table: fetches are measured
%% here around each lookup (as MongooseIM's span does); the cache misses,
%% counted in the NIF, are executed by mongoose_native_metrics.
-spec instrumentation(term()) -> [mongoose_native_instrument:spec()].
instrumentation(_HostType) ->
    [{mod_global_distrib_mapping_fetches, #{}, #{metrics => #{count => spiral, time => histogram}}},
     {mod_global_distrib_mapping_cache_misses, #{}, #{metrics => #{count => spiral}}}].

hooks(HostType) ->
    [{register_subhost, global, fun ?MODULE:register_subhost/3, #{}, 90},
     {unregister_subhost, global, fun ?MODULE:unregister_subhost/3, #{}, 90},
     {packet_to_component, global, fun ?MODULE:packet_to_component/3, #{}, 90},
     {sm_register_connection_hook, HostType, fun ?MODULE:session_opened/3, #{}, 90},
     {sm_remove_connection_hook, HostType, fun ?MODULE:session_closed/3, #{}, 90}].

%%--------------------------------------------------------------------
%% API
%%--------------------------------------------------------------------

-spec for_domain(binary()) -> {ok, binary()} | error.
for_domain(Domain) when is_binary(Domain) ->
    mongoose_native_instrument:span(
      mod_global_distrib_mapping_fetches, #{}, fun() -> lookup(for_domain, [Domain]) end,
      fun(Time, _) -> #{count => 1, time => Time, domain => Domain} end).

-spec insert_for_domain(binary()) -> ok.
insert_for_domain(Domain) when is_binary(Domain) ->
    insert_for_domain(Domain, false).

-spec insert_for_domain(binary(), boolean()) -> ok.
insert_for_domain(Domain, IsHidden) when is_binary(Domain), is_boolean(IsHidden) ->
    write(insert_for_domain, [Domain, IsHidden]).

%% @doc The cache maps Domain to Host; Redis gets this datacenter's entry.
-spec insert_for_domain(binary(), binary(), boolean()) -> ok.
insert_for_domain(Domain, Host, IsHidden) when is_binary(Domain), is_binary(Host),
                                               is_boolean(IsHidden) ->
    write(insert_for_domain, [Domain, Host, IsHidden]).

%% @doc Only the local cache learns the mapping.
-spec cache_domain(binary(), binary()) -> ok.
cache_domain(Domain, Host) when is_binary(Domain), is_binary(Host) ->
    write(cache_domain, [Domain, Host]).

-spec delete_for_domain(binary()) -> ok.
delete_for_domain(Domain) when is_binary(Domain) ->
    write(delete_for_domain, [Domain]).

-spec all_domains() -> [binary()].
all_domains() ->
    list(all_domains, []).

-spec public_domains() -> [binary()].
public_domains() ->
    list(public_domains, []).

-spec for_jid(jid()) -> {ok, binary()} | error.
for_jid(Jid) ->
    LJid = mod_global_distrib_adapter:to_lower(Jid),
    mongoose_native_instrument:span(
      mod_global_distrib_mapping_fetches, #{}, fun() -> lookup(for_jid, [LJid]) end,
      fun(Time, _) -> #{count => 1, time => Time, jid => LJid} end).

-spec insert_for_jid(jid()) -> ok.
insert_for_jid(Jid) ->
    write(insert_for_jid, [mod_global_distrib_adapter:to_lower(Jid)]).

-spec cache_jid(jid(), binary()) -> ok.
cache_jid(Jid, Host) when is_binary(Host) ->
    write(cache_jid, [mod_global_distrib_adapter:to_lower(Jid), Host]).

-spec clear_cache(jid()) -> ok.
clear_cache(Jid) ->
    write(clear_cache, [mod_global_distrib_adapter:to_lower(Jid)]).

-spec delete_for_jid(jid()) -> ok.
delete_for_jid(Jid) ->
    write(delete_for_jid, [mod_global_distrib_adapter:to_lower(Jid)]).

-spec endpoints(binary()) -> [endpoint()].
endpoints(Host) when is_binary(Host) ->
    [endpoint(Addr, Port) || {Addr, Port} <- list(endpoints, [Host])].

-spec hosts() -> [binary()].
hosts() ->
    list(hosts, []).

%% @doc The nodes of datacenter `Host' that keep their sessions in the table.
-spec nodes(binary()) -> [binary()].
nodes(Host) when is_binary(Host) ->
    list(nodes, [Host]).

%% @doc `{ok, #{mod_global_distrib_mapping_fetches_count => N,
%% mod_global_distrib_mapping_cache_misses_count => N,
%% mod_global_distrib_mapping_fetches_time => Histogram}}'.
metrics() ->
    mongoose_native_nif:gd_metrics().

%% @doc Refreshes this node's entries now; `{ok, Report}'.
refresh() ->
    call(refresh, []).

%% @doc `{ok, #{jids => N, domains => N}}': entries held by the local cache.
cache_sizes() ->
    call(cache_sizes, []).

%%--------------------------------------------------------------------
%% Hooks implementation
%%--------------------------------------------------------------------

session_opened(Acc, #{jid := UserJid}, _) ->
    insert_for_jid(UserJid),
    {ok, Acc}.

session_closed(Acc, #{jid := UserJid}, _) ->
    delete_for_jid(UserJid),
    {ok, Acc}.

packet_to_component(Acc, #{from := From}, _) ->
    maybe_update_mapping(From, Acc),
    {ok, Acc}.

%% A component registered on a subdomain of the global host only.
register_subhost(_, #{ldomain := SubHost, is_hidden := IsHidden}, _) ->
    IsSubhostOf = fun(Host) ->
                          case binary:match(SubHost, Host) of
                              {Start, Length} -> Start + Length == byte_size(SubHost);
                              _ -> false
                          end
                  end,
    GlobalHost = opt(global_host),
    NewAcc = case lists:filter(IsSubhostOf, mod_global_distrib_adapter:hosts()) of
                 [GlobalHost] -> insert_for_domain(SubHost, IsHidden);
                 _ -> ok
             end,
    {ok, NewAcc}.

unregister_subhost(_, #{ldomain := SubHost}, _) ->
    {ok, delete_for_domain(SubHost)}.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% What a stanza's origin tells about its sender goes to the cache only.
maybe_update_mapping(From, Acc) ->
    case mod_global_distrib_adapter:is_unavailable_presence(Acc) of
        true -> ok;
        false -> update_mapping(mod_global_distrib_adapter:to_lower(From), Acc)
    end.

update_mapping({<<>>, LServer, _}, Acc) ->
    case opt(global_host) of
        LServer -> ok;
        _ ->
            case for_domain(LServer) of
                error -> with_origin(Acc, fun(Origin) -> cache_domain(LServer, Origin) end);
                _ -> ok
            end
    end;
update_mapping(LJid, Acc) ->
    case for_jid(LJid) of
        error -> with_origin(Acc, fun(Origin) -> cache_jid(LJid, Origin) end);
        _ -> ok
    end.

with_origin(Acc, F) ->
    case mod_global_distrib_adapter:get_metadata(Acc, origin, undefined) of
        Origin when is_binary(Origin) -> F(Origin);
        _ -> ok
    end.

opt(Key) ->
    maps:get(Key, persistent_term:get(?OPTS_KEY, #{}), undefined).

%% @doc The module's options as the NIF validated them, every default filled
%% in (see `mod_global_distrib_utils:opts/0').
-spec opts() -> map().
opts() ->
    persistent_term:get(?OPTS_KEY).

endpoint(Addr, Port) ->
    Text = binary_to_list(Addr),
    case inet:parse_address(Text) of
        {ok, Ip} -> {Ip, Port};
        {error, _} -> {Text, Port}
    end.

lookup(Op, Args) ->
    case call(Op, Args) of
        {ok, Host} -> {ok, Host};
        error -> error;
        {error, Reason} -> failed(Op, Args, Reason), error
    end.

write(Op, Args) ->
    case call(Op, Args) of
        ok -> ok;
        {error, Reason} -> failed(Op, Args, Reason), ok
    end.

list(Op, Args) ->
    case call(Op, Args) of
        {ok, Items} -> Items;
        {error, Reason} -> failed(Op, Args, Reason), erlang:error({?MODULE, Op, Reason})
    end.

failed(Op, Args, {bad_request, _} = Reason) ->
    erlang:error({badarg, {?MODULE, Op, Args, Reason}});
failed(Op, Args, Reason) ->
    mod_global_distrib_adapter:log_warning(gd_mapping_failed,
                                           #{op => Op, args => Args, reason => Reason}).

call(Op, Args) ->
    Call = fun(Pid, Ref) -> mongoose_native_nif:gd_call(Op, Args, Pid, Ref) end,
    case mongoose_native_nif:call(Call, ?CALL_TIMEOUT) of
        {reply, Result} -> Result;
        timeout -> {error, {timeout, <<"no answer from the mapping">>}};
        {error, _} = Error -> Error
    end.
