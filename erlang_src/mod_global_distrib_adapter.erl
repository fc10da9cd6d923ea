%% @doc The one place where mod_global_distrib touches MongooseIM internals:
%% served domains, JID normalisation, accumulator metadata, hooks and
%% logging. Inside MongooseIM each function calls MongooseIM's own module;
%% without it (tests, the standalone library) a plain implementation stands
%% in, so the global distribution code runs either way.
-module(mod_global_distrib_adapter).

-export([hosts/0, node_name/0, to_lower/1, get_metadata/3, is_unavailable_presence/1,
         add_hooks/1, delete_hooks/1, registered_hooks/0, log_warning/2]).

-define(HOOKS_KEY, {?MODULE, hooks}).

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
-spec get_metadata(term(), atom(), term()) -> term().
get_metadata(Acc, Key, Default) ->
    case has(mongoose_acc, get, 4) of
        true -> mongoose_acc:get(global_distrib, Key, Default, Acc);
        false when is_map(Acc) -> maps:get({global_distrib, Key}, Acc, Default);
        false -> Default
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
