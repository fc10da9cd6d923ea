%% @doc The one place where mod_global_distrib touches MongooseIM internals:
%% served domains, JID normalisation, accumulator metadata, hooks and
%% logging. Inside MongooseIM each function calls MongooseIM's own module;
%% without it (tests, the standalone library) a plain implementation stands
%% in, so the global distribution code runs either way.
-module(mod_global_distrib_adapter).

-export([hosts/0, node_name/0, to_lower/1, get_metadata/3, is_unavailable_presence/1,
         add_hooks/1, delete_hooks/1, registered_hooks/0, log_warning/2]).
%% Routing, accumulators, hooks, JIDs (mod_global_distrib and its submodules).
-export([route/4, route_error_reply/4, new_acc/3, acc_for_transfer/1, acc_after_transfer/1, find_metadata/2, put_metadata/3,
         remove_metadata/2, run_fold/4, known_recipient/4, unknown_recipient/2,
         make_jid/3, jid_to_binary/1, new_id/0, log_info/2, has_session/1]).
%% The standalone session registry (used only without MongooseIM).
-export([register_session/2, unregister_session/1, sessions/0, start_registry/0,
         registry_loop/0, register_component/3, unregister_component/1]).

-define(HOOKS_KEY, {?MODULE, hooks}).
-define(SESSIONS, mod_global_distrib_adapter_sessions).

%% @doc The domains this server serves (MongooseIM's `general.hosts'); else the
%% `mongoose_native' application's `hosts' (or `host_types') environment.
-spec hosts() -> [binary()].
hosts() ->
    Hosts = case has(mongoose_config, get_opt, 1) of
                true -> mongoose_config:get_opt(hosts);
                false -> application:get_env(mongoose_native, hosts,
                                             application:get_env(mongoose_native, host_types, []))
            end,
    [unicode:characters_to_binary(H) || H <- Hosts].

-spec node_name() -> binary().
node_name() ->
    atom_to_binary(node(), latin1).

%% @doc `{LUser, LServer, LResource}' from a `jid' record (either MongooseIM
%% shape) or from a `{User, Server, Resource}' tuple.
-spec to_lower(tuple()) -> {binary(), binary(), binary()}.
to_lower({jid, _U, _S, _R, LU, LS, LR}) ->
    {LU, LS, LR};
to_lower({jid, LU, LS, LR}) ->
    {LU, LS, LR};
to_lower({U, S, R} = Jid) when is_binary(U), is_binary(S), is_binary(R) ->
    case has(jid, to_lower, 1) of
        true -> jid:to_lower(Jid);
        false -> {string:lowercase(U), string:lowercase(S), R}
    end;
to_lower(Other) ->
    erlang:error({badarg, {not_a_jid, Other}}).

%% @doc Global distribution metadata of an accumulator (`origin', `ttl', ...).
-spec get_metadata(term(), term(), term()) -> term().
get_metadata(Acc, Key, Default) ->
    case has(mongoose_acc, get, 4) of
        true -> mongoose_acc:get(global_distrib, Key, Default, Acc);
        false when is_map(Acc) -> maps:get({global_distrib, Key}, Acc, Default);
        false -> Default
    end.

-spec find_metadata(term(), term()) -> {ok, term()} | {error, undefined}.
find_metadata(Acc, Key) ->
    case has(mongoose_acc, get, 3) of
        true ->
            try mongoose_acc:get(global_distrib, Key, Acc) of
                Value -> {ok, Value}
            catch _:_ -> {error, undefined}
            end;
        false when is_map(Acc) ->
            case maps:find({global_distrib, Key}, Acc) of
                {ok, Value} -> {ok, Value};
                error -> {error, undefined}
            end;
        false ->
            {error, undefined}
    end.

%% @doc Permanent metadata: it survives the stanza's trip to other datacenters.
-spec put_metadata(term(), term(), term()) -> term().
put_metadata(Acc, Key, Value) ->
    case has(mongoose_acc, set_permanent, 4) of
        true -> mongoose_acc:set_permanent(global_distrib, Key, Value, Acc);
        false -> Acc#{{global_distrib, Key} => Value}
    end.

-spec remove_metadata(term(), term()) -> term().
remove_metadata(Acc, Key) ->
    case has(mongoose_acc, delete, 3) of
        true -> mongoose_acc:delete(global_distrib, Key, Acc);
        false -> maps:remove({global_distrib, Key}, Acc)
    end.

%% @doc A fresh accumulator for a stanza entering the router. Without
%% MongooseIM: a map with the stanza's name and type (what hook handlers
%% look at) and its element and JIDs.
-spec new_acc(tuple(), tuple(), tuple()) -> term().
new_acc(From, To, Packet) ->
    case has(mongoose_acc, new, 1) of
        true ->
            {_, LServer, _} = to_lower(To),
            mongoose_acc:new(#{location => #{mfa => {?MODULE, new_acc, 3}, line => ?LINE,
                                             file => ?FILE},
                               lserver => LServer, element => Packet,
                               from_jid => From, to_jid => To});
        false ->
            #{mongoose_acc => true, timestamp => erlang:system_time(microsecond),
              name => element_name(Packet), type => element_attr(Packet, <<"type">>),
              element => Packet, from_jid => From, to_jid => To}
    end.

%% @doc The accumulator as it goes over the wire: process ids, references,
%% ports and funs (MongooseIM's `origin_pid', `ref') name the sending node,
%% an atom the receiving datacenter does not have, so its safe decoding
%% (`binary_to_term(Bin, [safe])') would refuse the whole stanza. They are
%% replaced by `undefined'; acc_after_transfer/1 gives them local values.
-spec acc_for_transfer(term()) -> term().
acc_for_transfer(Acc) when is_map(Acc) ->
    maps:map(fun(_, V) when is_pid(V); is_reference(V); is_port(V); is_function(V) -> undefined;
                (_, V) -> V
             end, Acc);
acc_for_transfer(Acc) ->
    Acc.

-spec acc_after_transfer(term()) -> term().
acc_after_transfer(Acc = #{ref := undefined}) ->
    acc_after_transfer(Acc#{ref := make_ref()});
acc_after_transfer(Acc = #{origin_pid := undefined}) ->
    acc_after_transfer(Acc#{origin_pid := self()});
acc_after_transfer(Acc) ->
    Acc.

%% @doc Routes a stanza: MongooseIM's router, or without it the
%% `filter_packet' handlers, then delivery to a registered local session
%% (full JID, else any resource of the bare JID), else an error reply.
-spec route(tuple(), tuple(), term(), tuple()) -> term().
route(From, To, Acc, Packet) ->
    case has(ejabberd_router, route, 4) of
        true -> ejabberd_router:route(From, To, Acc, Packet);
        false -> standalone_route(From, To, Acc, Packet)
    end.

%% @doc Sends `service-unavailable' back to the sender of `Packet' (nothing
%% for a stanza that is an error already).
-spec route_error_reply(tuple(), tuple(), term(), tuple()) -> term().
route_error_reply(From, To, Acc, Packet) ->
    case has(ejabberd_router, route_error_reply, 4) of
        true ->
            ejabberd_router:route_error_reply(From, To, Acc,
                                              mongoose_xmpp_errors:service_unavailable());
        false ->
            case element_attr(Packet, <<"type">>) of
                <<"error">> -> Acc;
                _ ->
                    Error = error_packet(Packet),
                    route(To, From, new_acc(To, From, Error), Error)
            end
    end.

%% @doc `gen_hook:run_fold/4'; without MongooseIM the handlers recorded by
%% add_hooks/1 for `Hook' and `HostType' run by priority: `{ok, Acc}' goes
%% on, `{stop, Acc}' ends the fold.
-spec run_fold(atom(), term(), term(), map()) -> {ok, term()} | {stop, term()}.
run_fold(Hook, HostType, Acc, Params) ->
    case has(gen_hook, run_fold, 4) of
        true -> gen_hook:run_fold(Hook, HostType, Acc, Params);
        false ->
            Handlers = lists:keysort(5, [H || {Name, HT, _, _, _} = H <- registered_hooks(),
                                              Name =:= Hook, HT =:= HostType]),
            fold(Handlers, Acc, Params)
    end.

fold([], Acc, _Params) ->
    {ok, Acc};
fold([{_, _, Fun, Extra, _} | Rest], Acc, Params) ->
    case Fun(Acc, Params, Extra) of
        {ok, NewAcc} -> fold(Rest, NewAcc, Params);
        {stop, NewAcc} -> {stop, NewAcc}
    end.

%% @doc The `mod_global_distrib_known_recipient' hook.
known_recipient(GlobalHost, From, To, TargetHost) ->
    case has(mongoose_hooks, mod_global_distrib_known_recipient, 4) of
        true -> mongoose_hooks:mod_global_distrib_known_recipient(GlobalHost, From, To, TargetHost);
        false ->
            {_, Acc} = run_fold(mod_global_distrib_known_recipient, GlobalHost, #{},
                                #{from => From, to => To, target_host => TargetHost}),
            Acc
    end.

%% @doc The `mod_global_distrib_unknown_recipient' hook: the stanza to route
%% on, or `drop'.
unknown_recipient(GlobalHost, FPacket) ->
    case has(mongoose_hooks, mod_global_distrib_unknown_recipient, 2) of
        true -> mongoose_hooks:mod_global_distrib_unknown_recipient(GlobalHost, FPacket);
        false ->
            {_, Result} = run_fold(mod_global_distrib_unknown_recipient, GlobalHost, FPacket, #{}),
            Result
    end.

%% @doc A `jid' record (MongooseIM's shape) from binaries.
-spec make_jid(binary(), binary(), binary()) -> tuple().
make_jid(User, Server, Resource) ->
    case has(jid, make, 3) of
        true -> jid:make(User, Server, Resource);
        false ->
            {LU, LS, LR} = to_lower({User, Server, Resource}),
            {jid, User, Server, Resource, LU, LS, LR}
    end.

-spec jid_to_binary(tuple()) -> binary().
jid_to_binary(Jid) ->
    case has(jid, to_binary, 1) of
        true -> jid:to_binary(Jid);
        false ->
            {U, S, R} = case Jid of
                            {jid, U0, S0, R0, _, _, _} -> {U0, S0, R0};
                            {jid, U0, S0, R0} -> {U0, S0, R0};
                            {_, _, _} -> Jid
                        end,
            iolist_to_binary([case U of <<>> -> []; _ -> [U, $@] end, S,
                              case R of <<>> -> []; _ -> [$/, R] end])
    end.

%% @doc A unique stanza id for the global distribution metadata.
-spec new_id() -> binary().
new_id() ->
    case has(uuid, get_v4, 0) of
        true -> uuid:uuid_to_string(uuid:get_v4(), binary_standard);
        false -> binary:encode_hex(crypto:strong_rand_bytes(16))
    end.

-spec is_unavailable_presence(term()) -> boolean().
is_unavailable_presence(#{name := <<"presence">>, type := <<"unavailable">>}) -> true;
is_unavailable_presence(_) -> false.

%% @doc Registers `[{Hook, HostType, Fun, Extra, Priority}]' with gen_hook, or
%% records them when there is no MongooseIM.
add_hooks(Hooks) ->
    case has(gen_hook, add_handlers, 1) of
        true -> gen_hook:add_handlers(Hooks);
        false -> persistent_term:put(?HOOKS_KEY, lists:usort(registered_hooks() ++ Hooks))
    end.

delete_hooks(Hooks) ->
    case has(gen_hook, delete_handlers, 1) of
        true -> gen_hook:delete_handlers(Hooks);
        false -> persistent_term:put(?HOOKS_KEY, registered_hooks() -- Hooks)
    end.

%% @doc The handlers recorded without MongooseIM (for tests).
registered_hooks() ->
    persistent_term:get(?HOOKS_KEY, []).

log_warning(What, Meta) ->
    logger:warning(Meta#{what => What}).

log_info(What, Meta) ->
    logger:info(Meta#{what => What}).

%%--------------------------------------------------------------------
%% Standalone routing and sessions
%%--------------------------------------------------------------------

standalone_route(From, To, Acc, Packet) ->
    case run_fold(filter_packet, global, {From, To, Acc, Packet}, #{}) of
        {_, drop} -> Acc;
        {_, {F, T, A, P}} -> deliver(F, T, A, P)
    end.

deliver(From, To, Acc, Packet) ->
    {LU, LS, _} = LJid = to_lower(To),
    Found = case ets:whereis(?SESSIONS) of
                undefined -> [];
                _ ->
                    case {ets:lookup(?SESSIONS, {component, LS}), ets:lookup(?SESSIONS, LJid)} of
                        {[{_, Component}], _} ->
                            _ = run_fold(packet_to_component, global, Acc,
                                         #{from => From, to => To, packet => Packet}),
                            [Component];
                        {[], [{_, Full}]} -> [Full];
                        {[], []} -> [P || [P] <- ets:match(?SESSIONS, {{LU, LS, '_'}, '$1'})]
                    end
            end,
    case Found of
        [Pid | _] ->
            Pid ! {route, From, To, Acc, Packet},
            Acc;
        [] ->
            route_error_reply(From, To, Acc, Packet)
    end.

%% @doc Whether the user of `LJid' (`{LUser, LServer, LResource}') has a
%% session on this datacenter: MongooseIM's session manager, or the
%% standalone registry.
-spec has_session({binary(), binary(), binary()}) -> boolean().
has_session({LU, LS, _}) ->
    case has(ejabberd_sm, get_user_resources, 1) of
        true -> ejabberd_sm:get_user_resources(make_jid(LU, LS, <<>>)) =/= [];
        false ->
            ets:whereis(?SESSIONS) =/= undefined
                andalso ets:match(?SESSIONS, {{LU, LS, '_'}, '_'}, 1) =/= '$end_of_table'
    end.

%% @doc Registers a local session for `Jid' (a `jid' record): stanzas for it
%% are sent to `Pid' as `{route, From, To, Acc, Packet}'. Runs
%% `sm_register_connection_hook' (the session table learns the session).
-spec register_session(tuple(), pid()) -> ok.
register_session(Jid, Pid) when is_pid(Pid) ->
    ok = ensure_registry(),
    {_, LServer, _} = LJid = to_lower(Jid),
    true = ets:insert(?SESSIONS, {LJid, Pid}),
    _ = run_fold(sm_register_connection_hook, LServer, #{}, #{jid => Jid}),
    ok.

-spec unregister_session(tuple()) -> ok.
unregister_session(Jid) ->
    ok = ensure_registry(),
    {_, LServer, _} = LJid = to_lower(Jid),
    true = ets:delete(?SESSIONS, LJid),
    _ = run_fold(sm_remove_connection_hook, LServer, #{}, #{jid => Jid}),
    ok.

sessions() ->
    case ets:whereis(?SESSIONS) of
        undefined -> [];
        _ -> [S || {{_, _, _}, _} = S <- ets:tab2list(?SESSIONS)]
    end.

%% @doc Registers a component for `Domain' (every JID of it): stanzas for
%% it are sent to `Pid' as `{route, From, To, Acc, Packet}' after the
%% `packet_to_component' hook. Runs `register_subhost', as MongooseIM's
%% component registration does.
-spec register_component(binary(), pid(), boolean()) -> ok.
register_component(Domain, Pid, IsHidden) when is_pid(Pid), is_boolean(IsHidden) ->
    ok = ensure_registry(),
    LDomain = string:lowercase(Domain),
    true = ets:insert(?SESSIONS, {{component, LDomain}, Pid}),
    _ = run_fold(register_subhost, global, ok, #{ldomain => LDomain, is_hidden => IsHidden}),
    ok.

-spec unregister_component(binary()) -> ok.
unregister_component(Domain) ->
    ok = ensure_registry(),
    LDomain = string:lowercase(Domain),
    true = ets:delete(?SESSIONS, {component, LDomain}),
    _ = run_fold(unregister_subhost, global, ok, #{ldomain => LDomain}),
    ok.

ensure_registry() ->
    case ets:whereis(?SESSIONS) of
        undefined ->
            ok = mongoose_wpool:ensure_started(),
            _ = mongoose_native_sup:start_child(#{id => ?SESSIONS,
                                                  start => {?MODULE, start_registry, []}}),
            ok;
        _ ->
            ok
    end.

start_registry() ->
    Parent = self(),
    Pid = proc_lib:spawn_link(fun() ->
                                      _ = ets:new(?SESSIONS, [named_table, public, set,
                                                              {read_concurrency, true}]),
                                      Parent ! {self(), ready},
                                      registry_loop()
                              end),
    receive {Pid, ready} -> {ok, Pid} end.

registry_loop() ->
    receive _ -> ?MODULE:registry_loop() end.

element_name({xmlel, Name, _, _}) -> Name;
element_name(_) -> undefined.

element_attr({xmlel, _, Attrs, _}, Name) when is_list(Attrs) ->
    proplists:get_value(Name, Attrs, undefined);
element_attr({xmlel, _, Attrs, _}, Name) when is_map(Attrs) ->
    maps:get(Name, Attrs, undefined);
element_attr(_, _) ->
    undefined.

error_packet({xmlel, Name, Attrs, Children}) ->
    Err = {xmlel, <<"error">>, [{<<"type">>, <<"cancel">>}],
           [{xmlel, <<"service-unavailable">>,
             [{<<"xmlns">>, <<"urn:ietf:params:xml:ns:xmpp-stanzas">>}], []}]},
    Attrs1 = case Attrs of
                 L when is_list(L) -> lists:keystore(<<"type">>, 1, L, {<<"type">>, <<"error">>});
                 M when is_map(M) -> M#{<<"type">> => <<"error">>}
             end,
    {xmlel, Name, Attrs1, Children ++ [Err]}.

%% Whether MongooseIM's function is there; asked of the code server once,
%% then remembered (a lookup of a missing module searches the code path).
has(Module, Function, Arity) ->
    Key = {?MODULE, has, Module, Function, Arity},
    case persistent_term:get(Key, undefined) of
        undefined ->
            Has = case code:ensure_loaded(Module) of
                      {module, Module} -> erlang:function_exported(Module, Function, Arity);
                      _ -> false
                  end,
            persistent_term:put(Key, Has),
            Has;
        Has ->
            Has
    end.
