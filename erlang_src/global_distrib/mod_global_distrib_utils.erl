%% @doc Helpers shared by mod_global_distrib's submodules: the options
%% (read once at start, kept in persistent_term), the worker key, endpoint
%% resolution, the origin-to-cache update and the Erlang-side metrics
%% (`counters'/`atomics', so reading them never asks a process).
-module(mod_global_distrib_utils).

-export([set_opts/1, erase_opts/0, opts/0, opt/1, opt/2, started/0]).
-export([recipient_to_worker_key/2, resolve_endpoints/1, maybe_update_mapping/2,
         server_to_mgr_name/1]).
-export([metrics_init/1, metrics_erase/0, count/1, observe/2, erlang_metrics/0]).

-define(OPTS, {?MODULE, opts}).
-define(METRICS, {?MODULE, metrics}).
%% Histograms: exact buckets 0..?SMALL for small integers (TTL values),
%% log2 buckets for times in microseconds.

%%--------------------------------------------------------------------
%% Options
%%--------------------------------------------------------------------

%% @doc Keeps the options that mod_global_distrib_mapping:start/2 had the
%% NIF validate, every default filled in, for the submodules to read.
-spec set_opts(map()) -> map().
set_opts(Opts) ->
    persistent_term:put(?OPTS, Opts),
    Opts.

erase_opts() ->
    _ = persistent_term:erase(?OPTS),
    ok.

opts() ->
    persistent_term:get(?OPTS).

started() ->
    persistent_term:get(?OPTS, undefined) =/= undefined.

opt(Key) ->
    maps:get(Key, opts()).

%% @doc A nested option: `opt(bounce, max_retries)'.
opt(Section, Key) ->
    maps:get(Key, maps:get(Section, opts())).

%%--------------------------------------------------------------------
%% Routing helpers
%%--------------------------------------------------------------------

%% @doc The worker key of CONTRACTS.md section 2: the sender's JID when it
%% is on the global host, else its domain.
-spec recipient_to_worker_key(tuple(), binary()) -> binary().
recipient_to_worker_key(Jid, GlobalHost) ->
    case mod_global_distrib_adapter:to_lower(Jid) of
        {_, GlobalHost, _} = LJid -> mod_global_distrib_adapter:jid_to_binary(LJid);
        {_, Domain, _} -> Domain
    end.

%% @doc `{Address, Port}' pairs with every host name resolved (IPv4, else
%% IPv6); a name that does not resolve is logged and left out.
-spec resolve_endpoints([{inet:ip_address() | string() | binary(), inet:port_number()}]) ->
          [{inet:ip_address(), inet:port_number()}].
resolve_endpoints(Endpoints) ->
    lists:usort(lists:flatmap(fun resolve_endpoint/1, Endpoints)).

resolve_endpoint({Addr, Port}) when is_tuple(Addr) ->
    [{Addr, Port}];
resolve_endpoint({Addr, Port}) when is_binary(Addr) ->
    resolve_endpoint({binary_to_list(Addr), Port});
resolve_endpoint({Addr, Port}) ->
    case inet:parse_address(Addr) of
        {ok, Ip} -> [{Ip, Port}];
        {error, _} ->
            case {inet:getaddrs(Addr, inet), inet:getaddrs(Addr, inet6)} of
                {{ok, Ips}, _} -> [{Ip, Port} || Ip <- Ips];
                {_, {ok, Ips}} -> [{Ip, Port} || Ip <- Ips];
                {{error, R4}, {error, R6}} ->
                    mod_global_distrib_adapter:log_warning(
                      gd_resolve_endpoint_failed, #{address => Addr, ipv4_reason => R4,
                                                    ipv6_reason => R6}),
                    []
            end
    end.

%% @doc What an incoming stanza's origin tells about its sender goes to the
%% local cache (never to Redis), unless the cache knows the sender already.
maybe_update_mapping(From, Acc) ->
    case mod_global_distrib_adapter:is_unavailable_presence(Acc) of
        true -> ok;
        false ->
            case mod_global_distrib_adapter:get_metadata(Acc, origin, undefined) of
                Origin when is_binary(Origin) -> update_mapping(From, Origin);
                _ -> ok
            end
    end.

update_mapping(From, Origin) ->
    case mod_global_distrib_adapter:to_lower(From) of
        {<<>>, LServer, _} ->
            case opt(global_host) of
                LServer -> ok;
                _ ->
                    case mod_global_distrib_mapping:for_domain(LServer) of
                        error -> mod_global_distrib_mapping:cache_domain(LServer, Origin);
                        _ -> ok
                    end
            end;
        LJid ->
            case mod_global_distrib_mapping:for_jid(LJid) of
                error -> mod_global_distrib_mapping:cache_jid(LJid, Origin);
                _ -> ok
            end
    end.

-spec server_to_mgr_name(binary()) -> atom().
server_to_mgr_name(Server) ->
    binary_to_atom(<<"mod_global_distrib_server_mgr_", Server/binary>>, utf8).

%%--------------------------------------------------------------------
%% Metrics kept in Erlang
%%--------------------------------------------------------------------

%% Counters: stop_ttl_zero_count. Histograms: delivered_with_ttl_value
%% (exact values 0..MaxTtl, larger ones in the last bucket). The transport
%% keeps the others.
metrics_init(MaxTtl) ->
    Small = MaxTtl + 1,
    M = #{counters => counters:new(1, [write_concurrency]),
          ttl => mongoose_native_histogram:new(Small + 1, linear)},
    persistent_term:put(?METRICS, M),
    ok.

metrics_erase() ->
    _ = persistent_term:erase(?METRICS),
    ok.

%% Each also executes MongooseIM's event (mongoose_native_instrument).
count(stop_ttl_zero_count) ->
    mongoose_native_instrument:execute(mod_global_distrib_stop_ttl_zero, #{}, #{count => 1}),
    with_metrics(fun(#{counters := C}) -> counters:add(C, 1, 1) end).

observe(delivered_with_ttl_value, V) ->
    mongoose_native_instrument:execute(mod_global_distrib_delivered_with_ttl, #{}, #{value => V}),
    with_metrics(fun(#{ttl := H}) -> mongoose_native_histogram:add(H, V) end).

with_metrics(F) ->
    case persistent_term:get(?METRICS, undefined) of
        undefined -> ok;
        M -> F(M), ok
    end.

%% @doc The metrics this module keeps, named as in seed 004.
erlang_metrics() ->
    case persistent_term:get(?METRICS, undefined) of
        undefined -> #{};
        #{counters := C, ttl := Ttl} ->
            #{mod_global_distrib_stop_ttl_zero_count => counters:get(C, 1),
              mod_global_distrib_delivered_with_ttl_value => mongoose_native_histogram:snapshot(Ttl)}
    end.
