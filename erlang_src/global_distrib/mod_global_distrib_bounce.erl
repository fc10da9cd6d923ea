%% @doc The bounce store (seed 004, "Message bouncing"): a stanza whose
%% recipient has no known datacenter is kept and routed again after
%% `resend_after_ms', doubling the wait at each retry, at most
%% `max_retries' times; then it is routed locally (which answers its sender
%% with an error) and counted in `stop_ttl_zero_count'.
%%
%% Order: the stanzas kept for one sender/recipient pair always leave
%% together and in the order they were first stored, both when one of them
%% is due and when the recipient's datacenter becomes known
%% (`mod_global_distrib_known_recipient').
-module(mod_global_distrib_bounce).
-behaviour(gen_server).

-export([start/1, stop/1, hooks/1, start_link/0]).
-export([maybe_store_message/3, reroute_messages/3, sent_at/2]).
-export([bounce_queue_size/0, instrumentation/1, probe/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% {{ResendAtMs, Seq}, Key, FPacket}, Seq = {SystemUs, Unique} (seq/1)
-define(STORE, mod_global_distrib_bounce_message_store).
%% {Key, {ResendAtMs, Seq}}, Key = {LFrom, LTo}
-define(BY_TARGET, mod_global_distrib_bounce_message_store_by_target).
-define(MAX_TICK_MS, 100).

%%--------------------------------------------------------------------
%% API
%%--------------------------------------------------------------------

start(GlobalHost) ->
    {ok, _} = mongoose_native_sup:start_child(#{id => ?MODULE,
                                                start => {?MODULE, start_link, []}}),
    mod_global_distrib_adapter:add_hooks(hooks(GlobalHost)),
    ok.

stop(GlobalHost) ->
    mod_global_distrib_adapter:delete_hooks(hooks(GlobalHost)),
    mongoose_native_sup:stop_child(?MODULE).

hooks(GlobalHost) ->
    [{mod_global_distrib_unknown_recipient, GlobalHost, fun ?MODULE:maybe_store_message/3, #{}, 80},
     {mod_global_distrib_known_recipient, GlobalHost, fun ?MODULE:reroute_messages/3, #{}, 80}].

start_link() ->
    gen_server:start_link(?MODULE, [], []).

%% @doc MongooseIM 6.3's event: the store's size, probed by MongooseIM
%% every `instrumentation.probe_interval'.
-spec instrumentation(term()) -> [mongoose_native_instrument:spec()].
instrumentation(_HostType) ->
    [{mod_global_distrib_bounce_queue, #{}, #{probe => #{module => ?MODULE},
                                               metrics => #{size => gauge}}}].

-spec probe(atom(), map()) -> #{size := non_neg_integer()}.
probe(mod_global_distrib_bounce_queue, #{}) ->
    #{size => bounce_queue_size()}.

%% @doc Stanzas waiting in the store on this node.
-spec bounce_queue_size() -> non_neg_integer().
bounce_queue_size() ->
    case ets:info(?STORE, size) of
        undefined -> 0;
        N -> N
    end.

%%--------------------------------------------------------------------
%% Hooks
%%--------------------------------------------------------------------

maybe_store_message({From, To, Acc0, Packet} = FPacket, _, _) ->
    LocalHost = mod_global_distrib_utils:opt(local_host),
    #{max_retries := MaxRetries, resend_after_ms := ResendAfter} =
        mod_global_distrib_utils:opt(bounce),
    case ets:whereis(?STORE) =/= undefined andalso
        mod_global_distrib:get_metadata(Acc0, {bounce_ttl, LocalHost}, MaxRetries) of
        false ->
            {ok, FPacket};
        0 ->
            mod_global_distrib_utils:count(stop_ttl_zero_count),
            {ok, FPacket};
        OldTtl ->
            Attempt = max(0, MaxRetries - OldTtl),
            Delay = ResendAfter bsl min(Attempt, 20),
            Seq = case mod_global_distrib:get_metadata(Acc0, {bounce_seq, LocalHost}, undefined) of
                      undefined -> seq(erlang:system_time(microsecond));
                      S -> S
                  end,
            Acc1 = mod_global_distrib:put_metadata(Acc0, {bounce_ttl, LocalHost}, OldTtl - 1),
            Acc = mod_global_distrib:put_metadata(Acc1, {bounce_seq, LocalHost}, Seq),
            Key = index_key(From, To),
            %% Never due before a stanza stored earlier for the same pair.
            ResendAt = lists:max([now_ms() + Delay |
                                  [At + 1 || {_, {At, _}} <- ets:lookup(?BY_TARGET, Key)]]),
            insert({ResendAt, Seq}, Key, {From, To, Acc, Packet}),
            {stop, drop}
    end.

%% @doc Places a stanza among the stored stanzas of its sender/recipient
%% pair as if stored at `SentUs' (system time, microseconds), when it was
%% sent, rather than when it is stored: one the transport hands back after
%% its connection failed goes before those its sender sent later.
-spec sent_at(term(), integer()) -> term().
sent_at(Acc, SentUs) ->
    Key = {bounce_seq, mod_global_distrib_utils:opt(local_host)},
    case mod_global_distrib:get_metadata(Acc, Key, undefined) of
        undefined -> mod_global_distrib:put_metadata(Acc, Key, seq(SentUs));
        _ -> Acc
    end.

reroute_messages(Acc, #{from := From, to := To, target_host := TargetHost}, _) ->
    case ets:whereis(?STORE) of
        undefined -> ok;
        _ ->
            [route(F, T, mod_global_distrib:put_metadata(A, target_host_override, TargetHost), P)
             || {F, T, A, P} <- take_pair(index_key(From, To))]
    end,
    {ok, Acc}.

%%--------------------------------------------------------------------
%% gen_server: owns the tables, resends what is due
%%--------------------------------------------------------------------

init([]) ->
    _ = ets:new(?STORE, [named_table, public, ordered_set]),
    _ = ets:new(?BY_TARGET, [named_table, public, bag]),
    Tick = max(10, min(?MAX_TICK_MS, mod_global_distrib_utils:opt(bounce, resend_after_ms))),
    erlang:send_after(Tick, self(), resend),
    %% One host without endpoints must not hold up every other resend.
    mod_global_distrib_sender:never_wait(),
    {ok, Tick}.

handle_call(_Msg, _From, Tick) ->
    {reply, {error, unknown_call}, Tick}.

handle_cast(_Msg, Tick) ->
    {noreply, Tick}.

handle_info(resend, Tick) ->
    resend_due(now_ms()),
    erlang:send_after(Tick, self(), resend),
    {noreply, Tick};
handle_info(_Msg, Tick) ->
    {noreply, Tick}.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

resend_due(Now) ->
    case ets:first(?STORE) of
        {At, _} = StoreKey when At =< Now ->
            case ets:lookup(?STORE, StoreKey) of
                [{_, Key, {_, To, _, _}}] ->
                    mod_global_distrib_mapping:clear_cache(To),
                    Pair = take_pair(Key),
                    %% Not indexed (a store racing with this take): alone.
                    Orphan = [FPacket || {_, _, FPacket} <- ets:take(?STORE, StoreKey)],
                    [route(F, T, A, P) || {F, T, A, P} <- Pair ++ Orphan];
                [] ->
                    ok
            end,
            resend_due(Now);
        _ ->
            ok
    end.

%% Every stanza stored for the pair, in the order they were first stored.
take_pair(Key) ->
    Taken = lists:flatmap(fun({_, StoreKey}) ->
                                  case ets:take(?STORE, StoreKey) of
                                      [{{_, Seq}, _, FPacket}] -> [{Seq, FPacket}];
                                      [] -> []
                                  end
                          end, ets:take(?BY_TARGET, Key)),
    [FPacket || {_, FPacket} <- lists:keysort(1, Taken)].

insert({At, Seq} = StoreKey, Key, FPacket) ->
    case ets:insert_new(?STORE, {StoreKey, Key, FPacket}) of
        true -> ets:insert(?BY_TARGET, {Key, StoreKey});
        false -> insert({At + 1, Seq}, Key, FPacket)
    end.

route(From, To, Acc, Packet) ->
    try mod_global_distrib_adapter:route(From, To, Acc, Packet)
    catch Class:Reason ->
            mod_global_distrib_adapter:log_warning(gd_bounce_reroute_failed,
                                                   #{class => Class, reason => Reason})
    end.

%% A stored stanza's place in its pair: when it was first stored (or
%% sent), ties broken in storing order.
seq(Us) ->
    {Us, erlang:unique_integer([monotonic, positive])}.

index_key(From, To) ->
    {mod_global_distrib_adapter:to_lower(From), mod_global_distrib_adapter:to_lower(To)}.

now_ms() ->
    erlang:monotonic_time(millisecond).
