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
-define(LOG_BUCKETS, 64).

%%--------------------------------------------------------------------
%% Options
%%--------------------------------------------------------------------

%% @doc Every option of seed 004 with its default (the values were validated
%% by mod_global_distrib_mapping:start/2 already).
set_opts(Opts0) ->
    Opts = to_map(Opts0),
    Conns = to_map(maps:get(connections, Opts, #{})),
    Bounce = to_map(maps:get(bounce, Opts, #{})),
    LocalHost = bin(maps:get(local_host, Opts)),
    Endpoints = maps:get(endpoints, Conns, [{binary_to_list(LocalHost), 5555}]),
    Full = #{global_host => bin(maps:get(global_host, Opts)),
             local_host => LocalHost,
             message_ttl => maps:get(message_ttl, Opts, 4),
             hosts_refresh_interval => maps:get(hosts_refresh_interval, Opts, 3000),
             endpoints => [endpoint(E) || E <- Endpoints],
             connections_per_endpoint => maps:get(connections_per_endpoint, Conns, 1),
             endpoint_refresh_interval => maps:get(endpoint_refresh_interval, Conns, 60),
             endpoint_refresh_interval_when_empty =>
                 maps:get(endpoint_refresh_interval_when_empty, Conns, 3),
             disabled_gc_interval => maps:get(disabled_gc_interval, Conns, 60),
             tls => maps:get(tls, Conns, undefined),
             bounce => #{enabled => maps:get(enabled, Bounce, true),
                         resend_after_ms => maps:get(resend_after_ms, Bounce, 200),
                         max_retries => maps:get(max_retries, Bounce, 4)}},
    persistent_term:put(?OPTS, Full),
    Full.

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

to_map(M) when is_map(M) -> M;
to_map(L) when is_list(L) -> maps:from_list(L).

bin(B) -> unicode:characters_to_binary(B).

endpoint({Host, Port}) -> {Host, Port};
endpoint(#{host := Host, port := Port}) -> {Host, Port}.

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
%% (exact values 0..MaxTtl, larger ones in the last bucket),
%% incoming_transfer_time (log2 buckets, µs).
metrics_init(MaxTtl) ->
    Small = MaxTtl + 1,
    M = #{counters => counters:new(1, [write_concurrency]),
          ttl => hist_new(Small + 1, linear),
          transfer => hist_new(?LOG_BUCKETS, log2)},
    persistent_term:put(?METRICS, M),
    ok.

metrics_erase() ->
    _ = persistent_term:erase(?METRICS),
    ok.

count(stop_ttl_zero_count) ->
    with_metrics(fun(#{counters := C}) -> counters:add(C, 1, 1) end).

observe(delivered_with_ttl_value, V) ->
    with_metrics(fun(#{ttl := H}) -> hist_add(H, V) end);
observe(incoming_transfer_time, V) ->
    with_metrics(fun(#{transfer := H}) -> hist_add(H, V) end).

with_metrics(F) ->
    case persistent_term:get(?METRICS, undefined) of
        undefined -> ok;
        M -> F(M), ok
    end.

%% @doc The metrics this module keeps, named as in seed 004.
erlang_metrics() ->
    case persistent_term:get(?METRICS, undefined) of
        undefined -> #{};
        #{counters := C, ttl := Ttl, transfer := Transfer} ->
            #{mod_global_distrib_stop_ttl_zero_count => counters:get(C, 1),
              mod_global_distrib_delivered_with_ttl_value => hist_snapshot(Ttl),
              mod_global_distrib_incoming_transfer_time => hist_snapshot(Transfer)}
    end.

%% A histogram: bucket counters, then count, sum, min, max (atomics).
hist_new(Buckets, Kind) ->
    A = atomics:new(4, [{signed, true}]),
    atomics:put(A, 3, 1 bsl 62),
    atomics:put(A, 4, -1),
    #{kind => Kind, size => Buckets, buckets => counters:new(Buckets, [write_concurrency]),
      stats => A}.

hist_add(#{kind := Kind, size := Size, buckets := B, stats := A}, V0) ->
    V = max(0, V0),
    I = case Kind of
            linear -> min(V, Size - 1);
            log2 -> min(bits(V), Size - 1)
        end,
    counters:add(B, I + 1, 1),
    atomics:add(A, 1, 1),
    atomics:add(A, 2, V),
    cas_min(A, V),
    cas_max(A, V).

bits(0) -> 0;
bits(V) -> bits(V bsr 1) + 1.

cas_min(A, V) ->
    Old = atomics:get(A, 3),
    case V < Old andalso atomics:compare_exchange(A, 3, Old, V) =/= ok of
        true -> cas_min(A, V);
        false -> ok
    end.

cas_max(A, V) ->
    Old = atomics:get(A, 4),
    case V > Old andalso atomics:compare_exchange(A, 4, Old, V) =/= ok of
        true -> cas_max(A, V);
        false -> ok
    end.

%% `#{count, min, max, mean, median, 75, 90, 95, 99, 999}' like the Rust
%% histograms; percentiles are exact for linear buckets, the bucket's upper
%% bound (capped by max) for log2 ones.
hist_snapshot(#{kind := Kind, size := Size, buckets := B, stats := A}) ->
    Count = atomics:get(A, 1),
    case Count of
        0 ->
            maps:from_list([{K, 0} || K <- [count, min, max, mean, median, 75, 90, 95, 99, 999]]);
        _ ->
            Max = atomics:get(A, 4),
            Counts = [counters:get(B, I) || I <- lists:seq(1, Size)],
            Pct = fun(P) -> min(Max, bucket_value(Kind, pct_index(Counts, ceil_(Count * P)))) end,
            #{count => Count, min => atomics:get(A, 3), max => Max,
              mean => atomics:get(A, 2) div Count, median => Pct(0.5), 75 => Pct(0.75),
              90 => Pct(0.9), 95 => Pct(0.95), 99 => Pct(0.99), 999 => Pct(0.999)}
    end.

ceil_(X) -> max(1, ceil(X)).

pct_index(Counts, Rank) -> pct_index(Counts, Rank, 0, 0).

pct_index([C | Rest], Rank, Seen, I) ->
    case Seen + C >= Rank of
        true -> I;
        false -> pct_index(Rest, Rank, Seen + C, I + 1)
    end;
pct_index([], _, _, I) -> I - 1.

bucket_value(linear, I) -> I;
bucket_value(log2, 0) -> 0;
bucket_value(log2, I) -> (1 bsl I) - 1.
