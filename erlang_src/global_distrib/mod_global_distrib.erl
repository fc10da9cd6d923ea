%% @doc MongooseIM 6.3's mod_global_distrib on the library: the
%% `filter_packet' handler that decides where a stanza goes (this
%% datacenter, another one over the transport, or the bounce store), the
%% global distribution metadata of accumulators, and start/stop of the whole
%% subsystem: the session table (mod_global_distrib_mapping), the transport
%% (mongoose_native_gd_transport, listening on `connections.endpoints'),
%% the bounce store, the hosts refresher and its per-host server managers.
%%
%% Every call into MongooseIM goes through mod_global_distrib_adapter, so
%% this also runs without MongooseIM (see the adapter's standalone router).
-module(mod_global_distrib).

-export([deps/2, start/2, stop/1]).
-export([find_metadata/2, get_metadata/2, get_metadata/3, remove_metadata/2, put_metadata/3]).
-export([maybe_reroute/3, undeliverable/3]).
-export([process_opts/1, process_endpoint/1]).
-export([metrics/0, transport/0, instrumentation/0, all_instrumentation/1]).

-define(TRANSPORT, {?MODULE, transport}).
%% The instrumentation events declared at start, torn down at stop.
-define(EVENTS, {?MODULE, events}).
%% Ordered workers the transport hands incoming stanzas to (per worker key).
-define(WORKERS, 16).

%%--------------------------------------------------------------------
%% gen_mod API
%%--------------------------------------------------------------------

%% The submodules are started by start/2 itself, in order.
deps(_HostType, _Opts) ->
    [].

%% @doc Validates the options and starts the session table, then the
%% listeners, the bounce store, the hosts refresher and the routing hook.
%% `ok' or `{error, {Kind, Message}}'; nothing stays started on error.
%% As in MongooseIM, only the global host's start does anything (the module
%% is configured for every host type but runs once).
-spec start(term(), map() | list()) -> ok | {error, term()}.
start(HostType, Opts) ->
    case is_global_host(HostType, Opts) of
        true -> do_start(HostType, Opts);
        false -> ok
    end.

do_start(HostType, Opts) ->
    case mod_global_distrib_utils:started() of
        true ->
            {error, {invalid_config, <<"modules.mod_global_distrib: already started">>}};
        false ->
            case mod_global_distrib_mapping:start(HostType, Opts) of
                ok ->
                    Events = events(HostType, mod_global_distrib_mapping:opts()),
                    mongoose_native_instrument:set_up(Events),
                    persistent_term:put(?EVENTS, Events),
                    Result = try start_rest()
                             catch Class:Reason:Stack ->
                                     mod_global_distrib_adapter:log_warning(
                                       gd_start_failed, #{class => Class, reason => Reason,
                                                          stacktrace => Stack}),
                                     {error, {start_failed, Reason}}
                             end,
                    case Result of
                        ok -> ok;
                        {error, _} -> stop_all(HostType), Result
                    end;
                {error, _} = Error ->
                    Error
            end
    end.

%% @doc MongooseIM 6.3's events of this module.
-spec instrumentation() -> [mongoose_native_instrument:spec()].
instrumentation() ->
    [{mod_global_distrib_delivered_with_ttl, #{}, #{metrics => #{value => histogram}}},
     {mod_global_distrib_stop_ttl_zero, #{}, #{metrics => #{count => spiral}}}].

%% @doc Every event of mod_global_distrib and its submodules (in MongooseIM
%% each submodule declares its own as a gen_mod module). Not named
%% `instrumentation/1': gen_mod would declare that once per host type,
%% and this module is configured for every host type but runs once.
-spec all_instrumentation(term()) -> [mongoose_native_instrument:spec()].
all_instrumentation(HostType) ->
    instrumentation() ++ mod_global_distrib_mapping:instrumentation(HostType)
        ++ mod_global_distrib_receiver:instrumentation(HostType)
        ++ mod_global_distrib_hosts_refresher:instrumentation(HostType)
        ++ mod_global_distrib_bounce:instrumentation(HostType).

%% The events of what the validated options start: the bounce store's only
%% when it runs (MongooseIM probes it).
events(HostType, #{bounce := #{enabled := false}}) ->
    all_instrumentation(HostType) -- mod_global_distrib_bounce:instrumentation(HostType);
events(HostType, _Opts) ->
    all_instrumentation(HostType).

is_global_host(HostType, Opts) ->
    Global = case Opts of
                 #{global_host := G} -> G;
                 L when is_list(L) -> proplists:get_value(global_host, L);
                 _ -> undefined
             end,
    %% Standalone callers may pass anything as the host type.
    not (is_binary(HostType) orelse is_list(HostType)) orelse Global =:= undefined
        orelse unicode:characters_to_binary(HostType) =:= unicode:characters_to_binary(Global).

start_rest() ->
    Opts = mod_global_distrib_utils:set_opts(mod_global_distrib_mapping:opts()),
    #{local_host := LocalHost, global_host := GlobalHost, message_ttl := Ttl} = Opts,
    ok = mod_global_distrib_utils:metrics_init(Ttl),
    Listen = mod_global_distrib_utils:resolve_endpoints(maps:get(endpoints, Opts)),
    TOpts0 = #{local_host => LocalHost, endpoints => Listen,
               connections_per_endpoint => maps:get(connections_per_endpoint, Opts)},
    TOpts = case maps:get(tls, Opts) of
                Tls when is_map(Tls) -> TOpts0#{tls => Tls};
                undefined -> TOpts0
            end,
    Handler = #{handle => fun mod_global_distrib_receiver:handle/4,
                undecodable => fun mod_global_distrib_hosts_refresher:learn_nodes_of/1,
                undeliverable => fun ?MODULE:undeliverable/3},
    case mongoose_native_gd_transport:start(TOpts, Handler, ?WORKERS) of
        {ok, T} ->
            persistent_term:put(?TRANSPORT, T),
            %% Instrumented: each stanza's queue time from the first one.
            [] = mongoose_native_gd_transport:queue_times(T, mongoose_native_instrument:enabled()),
            case mod_global_distrib_utils:opt(bounce, enabled) of
                true -> ok = mod_global_distrib_bounce:start(GlobalHost);
                false -> ok
            end,
            ok = mod_global_distrib_hosts_refresher:start(),
            mod_global_distrib_adapter:add_hooks(routing_hooks(GlobalHost)),
            ok;
        {error, _} = Error ->
            Error
    end.

-spec stop(term()) -> ok.
stop(HostType) ->
    case mod_global_distrib_utils:started() andalso
        is_global_host(HostType, #{global_host => mod_global_distrib_utils:opt(global_host)}) of
        true -> stop_all(HostType);
        false -> ok
    end.

stop_all(HostType) ->
    mongoose_native_instrument:tear_down(persistent_term:get(?EVENTS, [])),
    _ = persistent_term:erase(?EVENTS),
    case mod_global_distrib_utils:started() of
        true ->
            GlobalHost = mod_global_distrib_utils:opt(global_host),
            mod_global_distrib_adapter:delete_hooks(routing_hooks(GlobalHost)),
            mod_global_distrib_hosts_refresher:stop(),
            mod_global_distrib_bounce:stop(GlobalHost);
        false ->
            ok
    end,
    case persistent_term:get(?TRANSPORT, undefined) of
        undefined -> ok;
        T ->
            mongoose_native_gd_transport:stop(T),
            persistent_term:erase(?TRANSPORT)
    end,
    mod_global_distrib_utils:erase_opts(),
    mod_global_distrib_utils:metrics_erase(),
    mod_global_distrib_mapping:stop(HostType).

%% Not `hooks/1': MongooseIM's gen_mod would register those a second time.
routing_hooks(_HostType) ->
    [{filter_packet, global, fun ?MODULE:maybe_reroute/3, #{}, 99}].

%% @doc MongooseIM's config processing of the module's section: the
%% default endpoint (`LOCAL_HOST:5555'), `advertised_endpoints' defaulting
%% to `endpoints', and `resolved_endpoints'.
-spec process_opts(map()) -> map().
process_opts(Opts = #{local_host := LocalHost, connections := Connections}) ->
    Opts#{connections := process_connections(LocalHost, Connections)};
process_opts(Opts = #{local_host := _}) ->
    process_opts(Opts#{connections => #{}}).

process_connections(_LocalHost, Opts = #{advertised_endpoints := _, endpoints := Endpoints}) ->
    Opts#{resolved_endpoints => mod_global_distrib_utils:resolve_endpoints(Endpoints)};
process_connections(LocalHost, Opts = #{endpoints := Endpoints}) ->
    process_connections(LocalHost, Opts#{advertised_endpoints => Endpoints});
process_connections(LocalHost, Opts) ->
    process_connections(LocalHost, Opts#{endpoints => [{binary_to_list(LocalHost), 5555}]}).

-spec process_endpoint(map()) -> {string(), inet:port_number()}.
process_endpoint(#{host := Host, port := Port}) ->
    {Host, Port}.

%%--------------------------------------------------------------------
%% Public functions
%%--------------------------------------------------------------------

-spec get_metadata(term(), term(), term()) -> term().
get_metadata(Acc, Key, Default) ->
    mod_global_distrib_adapter:get_metadata(Acc, Key, Default).

%% @doc The value, or an error when the accumulator has none.
-spec get_metadata(term(), term()) -> term().
get_metadata(Acc, Key) ->
    case find_metadata(Acc, Key) of
        {ok, Value} -> Value;
        {error, undefined} -> erlang:error({no_metadata, Key})
    end.

-spec find_metadata(term(), term()) -> {ok, term()} | {error, undefined}.
find_metadata(Acc, Key) ->
    mod_global_distrib_adapter:find_metadata(Acc, Key).

-spec put_metadata(term(), term(), term()) -> term().
put_metadata(Acc, Key, Value) ->
    mod_global_distrib_adapter:put_metadata(Acc, Key, Value).

-spec remove_metadata(term(), term()) -> term().
remove_metadata(Acc, Key) ->
    mod_global_distrib_adapter:remove_metadata(Acc, Key).

%% @doc The transport this node's mod_global_distrib runs on.
transport() ->
    persistent_term:get(?TRANSPORT).

%% @doc Every metric of seed 004 (CONTRACTS.md section 4) in one map: the
%% transport's counters, the session table's, and those kept in Erlang.
-spec metrics() -> map().
metrics() ->
    Transport = case persistent_term:get(?TRANSPORT, undefined) of
                    undefined -> #{};
                    T -> mongoose_native_gd_transport:metrics(T)
                end,
    Mapping = case mod_global_distrib_mapping:metrics() of
                  {ok, M} -> M;
                  _ -> #{}
              end,
    Bounce = #{mod_global_distrib_bounce_queue_size => mod_global_distrib_bounce:bounce_queue_size()},
    lists:foldl(fun maps:merge/2, #{},
                [Transport, Mapping, mod_global_distrib_utils:erlang_metrics(), Bounce]).

%%--------------------------------------------------------------------
%% Hook implementation
%%--------------------------------------------------------------------

%% @doc The `filter_packet' handler (priority 99): `{stop, drop}' when the
%% stanza left for another datacenter or went to the bounce store, else
%% `{ok, FPacket}' for local routing to go on.
maybe_reroute(drop, _, _) ->
    {ok, drop};
maybe_reroute({From, To, _Acc, _Packet} = FPacket, _, _) ->
    case {mod_global_distrib_adapter:to_lower(From), mod_global_distrib_adapter:to_lower(To)} of
        {{U, S, _}, {U, S, _}} ->
            %% Two sessions of one user are never routed between datacenters.
            {ok, FPacket};
        _ ->
            case mod_global_distrib_utils:started() andalso reroute(FPacket) of
                false -> {ok, FPacket};
                drop -> {stop, drop};
                Routed -> {ok, Routed}
            end
    end.

reroute({From, To, Acc0, Packet}) ->
    Acc = maybe_initialize_metadata(Acc0),
    #{local_host := LocalHost, global_host := GlobalHost} = mod_global_distrib_utils:opts(),
    Override = get_metadata(Acc, target_host_override, undefined),
    case lookup_recipients_host(Override, To, LocalHost, GlobalHost) of
        {ok, TargetHost} ->
            %% Stanzas of this sender for this recipient wait in the bounce
            %% store: this one waits behind them, and the known-recipient
            %% hook has the store's server send them all, in order (sent
            %% now, it would overtake them).
            Held = mod_global_distrib_bounce:hold({From, To, Acc, Packet}),
            mod_global_distrib_adapter:known_recipient(GlobalHost, From, To, TargetHost),
            case Held of
                true -> drop;
                false -> route_known(TargetHost, LocalHost, GlobalHost, {From, To, Acc, Packet})
            end;
        error ->
            mod_global_distrib_adapter:unknown_recipient(GlobalHost, {From, To, Acc, Packet})
    end.

%% A stanza for a recipient whose datacenter is known (and none of its
%% pair waiting in the bounce store): delivered here, or sent there.
-spec route_known(binary(), binary(), binary(), {tuple(), tuple(), term(), tuple()}) ->
          {tuple(), tuple(), term(), tuple()} | drop.
route_known(LocalHost, LocalHost, _GlobalHost, {From, To, Acc, Packet}) ->
    {ok, Ttl} = find_metadata(Acc, ttl),
    mod_global_distrib_utils:observe(delivered_with_ttl_value, Ttl),
    {From, To, Acc, Packet};
route_known(TargetHost, _LocalHost, GlobalHost, {From, To, Acc, Packet}) ->
    case find_metadata(Acc, ttl) of
        {ok, 0} ->
            mod_global_distrib_utils:count(stop_ttl_zero_count),
            {From, To, Acc, Packet};
        {ok, Ttl} ->
            Acc1 = mod_global_distrib_bounce:unmark(
                     remove_metadata(put_metadata(Acc, ttl, Ttl - 1), target_host_override)),
            case mod_global_distrib_sender:send(TargetHost, {From, To, Acc1, Packet}) of
                ok ->
                    drop;
                {error, Reason} ->
                    %% No way to that datacenter now: a stanza with
                    %% no route (bounced, or an error for its sender).
                    mod_global_distrib_adapter:log_info(
                      gd_send_failed, #{target_host => TargetHost, reason => Reason}),
                    Acc2 = remove_metadata(Acc, target_host_override),
                    mod_global_distrib_adapter:unknown_recipient(
                      GlobalHost, {From, To, Acc2, Packet})
            end
    end.

%% @doc A stanza the transport accepted for `Host' at `SentUs' and could
%% not write, its connection having failed: as one it refused, it goes to
%% the unknown-recipient hook (the bounce store tries it again after
%% resend_after_ms, at most max_retries times, then its sender gets an
%% error), or its sender gets an error at once without a bounce store. It
%% keeps its place, by the time it was sent, before its sender's later
%% stanzas that were refused meanwhile.
-spec undeliverable(binary(), integer(), {tuple(), tuple(), term(), tuple()}) -> term().
undeliverable(Host, SentUs, {From, To, Acc0, Packet}) ->
    mod_global_distrib_adapter:log_info(gd_send_failed, #{target_host => Host,
                                                          reason => connection_failed}),
    Acc1 = mod_global_distrib_adapter:acc_after_transfer(Acc0),
    %% The hop reroute/1 counted for the sending is given back.
    Acc2 = case find_metadata(Acc1, ttl) of
               {ok, Ttl} -> put_metadata(Acc1, ttl, Ttl + 1);
               {error, undefined} -> Acc1
           end,
    Acc = mod_global_distrib_bounce:sent_at(Acc2, SentUs),
    GlobalHost = mod_global_distrib_utils:opt(global_host),
    case mod_global_distrib_adapter:unknown_recipient(GlobalHost, {From, To, Acc, Packet}) of
        {F, T, A, P} -> mod_global_distrib_adapter:route_error_reply(F, T, A, P);
        drop -> ok
    end.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% A stanza seen for the first time (no origin yet) gets a TTL, an id and
%% this datacenter as its origin.
maybe_initialize_metadata(Acc) ->
    case find_metadata(Acc, origin) of
        {error, undefined} ->
            Acc1 = put_metadata(Acc, ttl, mod_global_distrib_utils:opt(message_ttl)),
            Acc2 = put_metadata(Acc1, id, mod_global_distrib_adapter:new_id()),
            put_metadata(Acc2, origin, mod_global_distrib_utils:opt(local_host));
        {ok, _} ->
            Acc
    end.

lookup_recipients_host(undefined, To, LocalHost, GlobalHost) ->
    lookup_recipients_host(mod_global_distrib_adapter:to_lower(To), LocalHost, GlobalHost);
lookup_recipients_host(TargetHost, _To, _LocalHost, _GlobalHost) ->
    {ok, TargetHost}.

lookup_recipients_host({<<>>, LServer, _}, LocalHost, GlobalHost)
  when LServer == LocalHost; LServer == GlobalHost ->
    {ok, LocalHost};
lookup_recipients_host({<<>>, LServer, _}, _LocalHost, _GlobalHost) ->
    mod_global_distrib_mapping:for_domain(LServer);
lookup_recipients_host({_, LServer, _} = To, LocalHost, GlobalHost) ->
    case LServer of
        LocalHost -> {ok, LocalHost};
        GlobalHost -> local_only_with_session(mod_global_distrib_mapping:for_jid(To), To, LocalHost);
        _ -> mod_global_distrib_mapping:for_domain(LServer)
    end.

%% The table names this datacenter but the user has no session here: the
%% entry is stale or about to change (a session that just closed, a move
%% in progress). Unknown, so the stanza waits in the bounce store for the
%% entry to settle instead of being answered with an error.
local_only_with_session({ok, LocalHost}, To, LocalHost) ->
    case mod_global_distrib_adapter:has_session(To) of
        true -> {ok, LocalHost};
        false -> error
    end;
local_only_with_session(Found, _To, _LocalHost) ->
    Found.
