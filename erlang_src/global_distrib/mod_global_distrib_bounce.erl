%% @doc The bounce store (seed 004, "Message bouncing"): a stanza whose
%% recipient has no known datacenter, or whose datacenter cannot be reached,
%% is kept and routed again after `resend_after_ms', doubling the wait at
%% each retry, at most `max_retries' times; then it is routed locally (which
%% answers its sender with an error) and counted in `stop_ttl_zero_count'.
%%
%% Order: the stanzas kept for one sender/recipient pair leave in the order
%% they were first stored, and only this module's gen_server routes them
%% (one router per pair: two would race, and a stanza the session sends
%% itself could overtake the ones the server is still routing). A new
%% stanza for a pair that holds stanzas is stored behind them (hold/1,
%% from mod_global_distrib's routing) instead of being sent; once the
%% recipient's datacenter is known (`mod_global_distrib_known_recipient')
%% the server is asked to flush the pair. It routes the pair oldest first
%% and removes a stanza's index entry only after routing it, so the pair
%% holds stanzas (and new ones queue behind) until the last one is out.
%% The server's sends and the session's share the sender's connection
%% (mod_global_distrib_sender), so they stay in order on the wire too.
%%
%% Retries: only a stanza that is due spends a retry. One routed before it
%% is due (a flush) that still cannot be sent goes back with its retries
%% and due time untouched; the flush stops there and the stanzas behind it
%% stay, in order, those already due spending a retry as if tried (their
%% datacenter was just found unreachable). Otherwise each stanza of a burst
%% to an unreachable datacenter flushed the ones before it, and the first
%% ones spent `max_retries' within milliseconds.
-module(mod_global_distrib_bounce).
-behaviour(gen_server).

-export([start/1, stop/1, hooks/1, start_link/0]).
-export([maybe_store_message/3, reroute_messages/3, sent_at/2, hold/1, unmark/1]).
-export([bounce_queue_size/0, instrumentation/1, probe/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% {{ResendAtMs, Seq}, Key, FPacket}, Seq = {SystemUs, Unique} (seq/1)
-define(STORE, mod_global_distrib_bounce_message_store).
%% {Key, {ResendAtMs, Seq}}, Key = {LFrom, LTo}
-define(BY_TARGET, mod_global_distrib_bounce_message_store_by_target).
%% The server's registered name: sessions ask it to flush a pair.
-define(SERVER, mod_global_distrib_bounce_server).
%% In the server's process dictionary: it routes the stored stanzas itself.
-define(ROUTER, {?MODULE, router}).
-define(MAX_TICK_MS, 100).

-type fpacket() :: {tuple(), tuple(), term(), tuple()}.
-type key() :: {tuple(), tuple()}.
-type store_key() :: {integer(), {integer(), pos_integer()}}.
%% Metadata `{bounce_flushed, LocalHost}' of a stanza the server routes:
%% `retry' when it was due (a failure spends a retry), `{keep, StoreKey}'
%% when it was not (a failure puts it back as it was).
-type mark() :: retry | {keep, store_key()}.

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
    gen_server:start_link({local, ?SERVER}, ?MODULE, [], []).

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

%% @doc For mod_global_distrib's routing of a stanza whose recipient's
%% datacenter is known: when its pair holds stanzas, it is stored behind
%% them (`true'; the known-recipient hook then has the server flush the
%% pair) rather than sent ahead of them. `false' (route it) for a stanza
%% the server itself routes, or one the store cannot take.
-spec hold(fpacket()) -> boolean().
hold({From, To, Acc, _} = FPacket) ->
    ets:whereis(?STORE) =/= undefined
        andalso mark(Acc) =:= undefined
        andalso ets:member(?BY_TARGET, index_key(From, To))
        andalso store(FPacket) =:= {stop, drop}.

%% @doc A stanza the server routed carries its mark until it is sent: it
%% must not reach another datacenter (whose bounce store would read it).
-spec unmark(term()) -> term().
unmark(Acc) ->
    mod_global_distrib:remove_metadata(Acc, mark_key()).

%%--------------------------------------------------------------------
%% Hooks
%%--------------------------------------------------------------------

maybe_store_message({From, To, Acc0, Packet} = FPacket, _, _) ->
    case ets:whereis(?STORE) =/= undefined andalso mark(Acc0) of
        false ->
            {ok, FPacket};
        {keep, StoreKey} ->
            %% Routed early by a flush: back in its place, as it was.
            insert(StoreKey, index_key(From, To), {From, To, unmark(Acc0), Packet}),
            {stop, drop};
        _ ->
            case store({From, To, unmark(Acc0), Packet}) of
                out_of_retries ->
                    mod_global_distrib_utils:count(stop_ttl_zero_count),
                    {ok, FPacket};
                Stored ->
                    Stored
            end
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

%% The recipient's datacenter is known: the server flushes the pair. Not
%% in the server itself, which runs this hook for each stanza it routes.
reroute_messages(Acc, #{from := From, to := To, target_host := TargetHost}, _) ->
    Key = index_key(From, To),
    case get(?ROUTER) =:= undefined andalso ets:whereis(?BY_TARGET) =/= undefined
        andalso ets:member(?BY_TARGET, Key) of
        true -> gen_server:cast(?SERVER, {flush, Key, TargetHost});
        false -> ok
    end,
    {ok, Acc}.

%%--------------------------------------------------------------------
%% gen_server: owns the tables, routes every stored stanza
%%--------------------------------------------------------------------

init([]) ->
    _ = ets:new(?STORE, [named_table, public, ordered_set]),
    _ = ets:new(?BY_TARGET, [named_table, public, bag]),
    Tick = max(10, min(?MAX_TICK_MS, mod_global_distrib_utils:opt(bounce, resend_after_ms))),
    erlang:send_after(Tick, self(), resend),
    put(?ROUTER, true),
    %% One host without endpoints must not hold up every other resend.
    mod_global_distrib_sender:never_wait(),
    {ok, Tick}.

handle_call(_Msg, _From, Tick) ->
    {reply, {error, unknown_call}, Tick}.

handle_cast({flush, Key, TargetHost}, Tick) ->
    route_pair(Key, TargetHost, now_ms()),
    {noreply, Tick};
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

%% A stanza to keep: one retry less, due after the doubled wait; or none
%% left (then routed locally: an error for its sender).
-spec store(fpacket()) -> {stop, drop} | out_of_retries.
store({From, To, Acc0, Packet}) ->
    LocalHost = mod_global_distrib_utils:opt(local_host),
    #{max_retries := MaxRetries, resend_after_ms := ResendAfter} =
        mod_global_distrib_utils:opt(bounce),
    case mod_global_distrib:get_metadata(Acc0, {bounce_ttl, LocalHost}, MaxRetries) of
        0 ->
            out_of_retries;
        OldTtl ->
            Attempt = max(0, MaxRetries - OldTtl),
            Delay = ResendAfter bsl min(Attempt, 20),
            Seq = case mod_global_distrib:get_metadata(Acc0, {bounce_seq, LocalHost}, undefined) of
                      undefined -> seq(erlang:system_time(microsecond));
                      S -> S
                  end,
            Acc1 = mod_global_distrib:put_metadata(Acc0, {bounce_ttl, LocalHost}, OldTtl - 1),
            Acc = mod_global_distrib:put_metadata(Acc1, {bounce_seq, LocalHost}, Seq),
            insert({now_ms() + Delay, Seq}, index_key(From, To), {From, To, Acc, Packet}),
            {stop, drop}
    end.

%% Each due stanza's pair, routed (the mapping read again, not cached).
resend_due(Now) ->
    case ets:first(?STORE) of
        {At, _} = StoreKey when At =< Now ->
            case ets:lookup(?STORE, StoreKey) of
                [{_, Key, {_, To, _, _}}] ->
                    mod_global_distrib_mapping:clear_cache(To),
                    %% Indexed if its storer has not done it yet (a bag
                    %% keeps one copy): route_pair/3 then sees it.
                    ets:insert(?BY_TARGET, {Key, StoreKey}),
                    route_pair(Key, undefined, Now);
                [] ->
                    ok
            end,
            %% Every due stanza of the pair went or is due later now.
            resend_due(Now);
        _ ->
            ok
    end.

%% Routes the pair's stored stanzas oldest first, to `TargetHost' when
%% given, until none is left or one comes back to the store.
-spec route_pair(key(), binary() | undefined, integer()) -> ok.
route_pair(Key, TargetHost, Now) ->
    case pair(Key) of
        [] -> ok;
        Stored -> route_pair(Key, Stored, TargetHost, Now)
    end.

route_pair(Key, [], TargetHost, Now) ->
    %% Stored meanwhile behind the ones routed.
    route_pair(Key, TargetHost, Now);
route_pair(Key, [{At, Seq} = StoreKey | Rest], TargetHost, Now) ->
    case ets:take(?STORE, StoreKey) of
        [{_, _, {F, T, A0, P}}] ->
            Mark = case At =< Now of
                       true -> retry;
                       false -> {keep, StoreKey}
                   end,
            A1 = mod_global_distrib:put_metadata(A0, mark_key(), Mark),
            A = case TargetHost of
                    undefined -> A1;
                    _ -> mod_global_distrib:put_metadata(A1, target_host_override, TargetHost)
                end,
            route(F, T, A, P),
            %% Unindexed only now: until here the pair held it, so new
            %% stanzas of the pair were stored behind it, not sent.
            case ets:member(?STORE, StoreKey) of
                true ->
                    spend_due(Key, Now);
                false ->
                    ets:delete_object(?BY_TARGET, {Key, StoreKey}),
                    %% Stored again under a later due time: it came back.
                    case ets:match_object(?BY_TARGET, {Key, {'_', Seq}}) =/= [] of
                        true -> spend_due(Key, Now);
                        false -> route_pair(Key, Rest, TargetHost, Now)
                    end
            end;
        [] ->
            ets:delete_object(?BY_TARGET, {Key, StoreKey}),
            route_pair(Key, Rest, TargetHost, Now)
    end.

%% A stanza of the pair came back: its datacenter cannot be reached. The
%% due ones behind it spend a retry as if tried, without being sent ahead
%% of it; one out of retries waits behind it for its own try (routed, it
%% goes or is answered with an error).
-spec spend_due(key(), integer()) -> ok.
spend_due(Key, Now) ->
    ResendAfter = mod_global_distrib_utils:opt(bounce, resend_after_ms),
    lists:foreach(
      fun({At, Seq} = StoreKey) when At =< Now ->
              case ets:take(?STORE, StoreKey) of
                  [{_, _, FPacket}] ->
                      case store(FPacket) of
                          {stop, drop} -> ok;
                          out_of_retries -> insert({Now + ResendAfter, Seq}, Key, FPacket)
                      end;
                  [] ->
                      ok
              end,
              ets:delete_object(?BY_TARGET, {Key, StoreKey});
         (_) ->
              ok
      end, pair(Key)).

%% The store keys of the pair's stanzas, in the order they were first
%% stored.
-spec pair(key()) -> [store_key()].
pair(Key) ->
    Indexed = [{Seq, StoreKey} || {_, {_, Seq} = StoreKey} <- ets:lookup(?BY_TARGET, Key)],
    [StoreKey || {_, StoreKey} <- lists:keysort(1, Indexed)].

-spec insert(store_key(), key(), fpacket()) -> true.
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

-spec mark(term()) -> mark() | undefined.
mark(Acc) ->
    mod_global_distrib:get_metadata(Acc, mark_key(), undefined).

-spec mark_key() -> {bounce_flushed, binary()}.
mark_key() ->
    {bounce_flushed, mod_global_distrib_utils:opt(local_host)}.

%% A stored stanza's place in its pair: when it was first stored (or
%% sent), ties broken in storing order.
seq(Us) ->
    {Us, erlang:unique_integer([monotonic, positive])}.

-spec index_key(tuple(), tuple()) -> key().
index_key(From, To) ->
    {mod_global_distrib_adapter:to_lower(From), mod_global_distrib_adapter:to_lower(To)}.

now_ms() ->
    erlang:monotonic_time(millisecond).
