%% @doc MongooseIM's outgoing pool API on top of the mongoose_native NIF.
%%
%% Exports and return shapes follow MongooseIM 6.3's `mongoose_wpool'. A pool
%% lives in the NIF; this module keeps the `{Type, HostType, Tag}' registry, picks
%% the hash worker for the five-argument calls, and waits for answers with
%% the pool's `call_timeout', cancelling on timeout so that no late answer
%% ever reaches the caller's mailbox.
-module(mongoose_wpool).

-export([ensure_started/0,
         start/1, start/2, start/3, start/4, start/5,
         stop/0, stop/1, stop/2, stop/3,
         get_worker/2, get_worker/3,
         call/2, call/3, call/4, call/5,
         send_request/2, send_request/3, send_request/4, send_request/5,
         cast/2, cast/3, cast/4, cast/5, stream/7,
         get_pool_settings/3, get_pools/0, stats/3]).
-export([start_configured_pools/0, start_configured_pools/1,
         start_configured_pools/2, start_configured_pools/3]).
-export([is_configured/1, make_pool_name/3, expand_pools/3, is_supported_strategy/2]).
-export([forget_all/0, call_with_timeout/5, get_pool_resources/2, get_pool_handle/3,
         instrumentation/3]).

-record(pool, {name :: {atom(), term(), atom()},
               atom_name :: atom(),
               strategy :: atom(),
               call_timeout :: pos_integer(),
               workers :: pos_integer(),
               res :: reference() | binary()}).

%% The registry: a pool per persistent term, which every call reads without
%% a lock or a copy (an ETS lookup took about 5% of a no-I/O call's CPU at
%% 128 callers in a profile). Written only when a pool starts or stops: erasing one
%% makes the VM visit every process once, which a pool's stop can afford.
-define(KEY(Name), {?MODULE, Name}).

%% Opening every connection of a pool takes at most its driver's connect timeout.
-define(START_TIMEOUT, 60000).

-type pool_type() :: redis | http | rdbms | cassandra | elastic | generic | rabbit | ldap | riak.
-type tag() :: atom().
-type host_type() :: global | binary().
-type pool_name() :: {pool_type(), host_type(), tag()}.
-type pool_opts() :: [{atom(), term()}] | #{atom() => term()}.
-type conn_opts() :: map() | [{atom(), term()}].
%% A pool as MongooseIM's config has it (`scope' `host_type' is expanded),
%% or a legacy `{Type, Host, Tag, PoolOpts, ConnOpts}' tuple.
-type pool_in() :: #{type := pool_type(), scope := host_type | host_type(), tag := tag(),
                     opts := #{atom() => term()}, conn_opts := conn_opts()}
                 | {pool_type(), host | global | binary() | string(), tag(), [{atom(), term()}],
                    conn_opts()}.
-type pool_map() :: #{type := pool_type(), host_type := host_type(), tag := tag(),
                      opts := [{atom(), term()}], conn_opts := conn_opts()}.
-type start_result() :: {ok, reference()} | {error, term()}.
-export_type([pool_type/0, tag/0, pool_name/0, host_type/0]).

%% gen_server's request ids are `[alias | Ref]'.
-dialyzer({no_improper_lists, request_pool/3}).

%%--------------------------------------------------------------------
%% Lifecycle
%%--------------------------------------------------------------------

-spec ensure_started() -> ok.
ensure_started() ->
    {ok, _} = application:ensure_all_started(mongoose_native),
    ok.

%% @private Drops every pool from the registry, each stopped once nothing
%% else holds its resource: the application's start and stop forget the
%% pools of an earlier run (as a table owned by its supervisor would).
-spec forget_all() -> ok.
forget_all() ->
    lists:foreach(fun(#pool{name = Name}) -> persistent_term:erase(?KEY(Name)) end, pools()).

-spec start_configured_pools() -> [start_result()].
start_configured_pools() ->
    start_configured_pools(mongoose_native_config:outgoing_pools()).

-spec start_configured_pools([pool_in()]) -> [start_result()].
start_configured_pools(PoolsIn) ->
    start_configured_pools(PoolsIn, mongoose_native_config:host_types()).

%% Accepts MongooseIM's maps and the legacy `{Type, Host, Tag, PoolOpts,
%% ConnOpts}' tuples, whose host-specific entries override `host' ones.
-spec start_configured_pools([pool_in()], [binary()]) -> [start_result()].
start_configured_pools(PoolsIn, HostTypes) ->
    Pools = [to_map(P) || P <- PoolsIn],
    {HostSpecific, Rest} = lists:partition(fun(#{scope := S}) -> is_binary(S) end, Pools),
    start_configured_pools(Rest, HostSpecific, HostTypes).

-spec start_configured_pools([pool_in()], [pool_in()], [binary()]) -> [start_result()].
start_configured_pools(PoolsIn, HostTypeSpecific, HostTypes) ->
    Pools = expand_pools([to_map(P) || P <- PoolsIn], [to_map(P) || P <- HostTypeSpecific],
                         HostTypes),
    [start(Pool) || Pool <- Pools].

%% MongooseIM 6.3's expansion: `host_type' scoped pools are started once per
%% host type, except where a host-type specific pool with the same type and
%% tag exists.
-spec expand_pools([pool_in()], [pool_in()], [binary()]) -> [pool_map()].
expand_pools(Pools, PerHostType, HostTypes) ->
    HostSpecific = [{Type, HT, Tag} || #{type := Type, scope := HT, tag := Tag} <- PerHostType],
    F = fun(M = #{type := PoolType, scope := host_type, tag := Tag}) ->
                [M#{scope => HostType} || HostType <- HostTypes,
                                          not lists:member({PoolType, HostType, Tag}, HostSpecific)];
           (Other) -> [Other]
        end,
    Pools1 = lists:flatmap(F, Pools),
    [prepare_pool_map(P) || P <- PerHostType ++ Pools1].

prepare_pool_map(Pool = #{scope := HT, opts := Opts}) ->
    Pool1 = maps:remove(scope, Pool),
    Pool1#{host_type => HT, opts => maps:to_list(Opts)}.

to_map({Type, Host, Tag, PoolOpts, ConnOpts}) ->
    Scope = case Host of
                host -> host_type;
                _ when is_list(Host) -> list_to_binary(Host);
                _ -> Host
            end,
    #{type => Type, scope => Scope, tag => Tag,
      opts => maps:from_list(PoolOpts), conn_opts => ConnOpts};
to_map(Map = #{}) ->
    Map.

-spec start(pool_map()) -> start_result().
start(#{type := PoolType, host_type := HostType, tag := Tag, opts := PoolOpts,
        conn_opts := ConnOpts}) ->
    start(PoolType, HostType, Tag, PoolOpts, ConnOpts).

-spec start(pool_type(), pool_opts()) -> start_result().
start(PoolType, PoolOpts) ->
    start(PoolType, global, PoolOpts).

-spec start(pool_type(), host_type(), pool_opts()) -> start_result().
start(PoolType, HostType, PoolOpts) ->
    start(PoolType, HostType, default, PoolOpts).

-spec start(pool_type(), host_type(), tag(), pool_opts()) -> start_result().
start(PoolType, HostType, Tag, PoolOpts) ->
    start(PoolType, HostType, Tag, PoolOpts, #{}).

-spec start(pool_type(), host_type(), tag(), pool_opts(), conn_opts()) -> start_result().
start(PoolType, HostType, Tag, PoolOpts0, ConnOpts) ->
    ensure_started(),
    case {kind(PoolType), opts_list(PoolOpts0)} of
        {{error, _} = Error, _} ->
            Error;
        {_, error} ->
            {error, {invalid_config, <<(config_path(PoolType, Tag))/binary,
                                       ": expected a map or a list of {Key, Value} pairs">>}};
        {Kind, {ok, PoolOpts}} ->
            Strategy = proplists:get_value(strategy, PoolOpts, best_worker),
            case lists:member(Strategy, maps:get(refused_strategies, Kind)) of
                true -> error({strategy_not_supported, PoolType, HostType, Tag, Strategy});
                false -> start_pool(PoolType, HostType, Tag, Kind, PoolOpts, ConnOpts)
            end
    end.

%% @doc For the `mongoose_wpool_<type>' callback modules.
-spec is_supported_strategy(pool_type(), atom()) -> boolean().
is_supported_strategy(PoolType, Strategy) ->
    not lists:member(Strategy, maps:get(refused_strategies, kind(PoolType))).

%% The pool type's defaults and refused strategies, from the NIF's table.
kind(PoolType) when is_atom(PoolType) ->
    mongoose_native_nif:pool_kind(atom_to_binary(PoolType));
kind(PoolType) ->
    {error, {invalid_config, iolist_to_binary(io_lib:format("unknown pool type ~0p", [PoolType]))}}.

start_pool(PoolType, HostType, Tag, Kind, PoolOpts, ConnOpts) ->
    Name = {PoolType, HostType, Tag},
    Path = config_path(PoolType, Tag),
    case lookup(Name) of
        #pool{} ->
            {error, {already_started, Name}};
        undefined ->
            case open(PoolType, Name, Kind, PoolOpts, ConnOpts, Path) of
                {ok, Res} ->
                    persistent_term:put(?KEY(Name),
                                        #pool{name = Name,
                                              atom_name = make_pool_name(PoolType, HostType, Tag),
                                              strategy = proplists:get_value(strategy, PoolOpts,
                                                                             best_worker),
                                              call_timeout = setting(call_timeout, Kind, PoolOpts),
                                              workers = setting(workers, Kind, PoolOpts),
                                              res = Res}),
                    mongoose_native_nif:pool_labels(Res, host_type_label(HostType),
                                                    atom_to_binary(Tag)),
                    mongoose_native_instrument:set_up(instrumentation(PoolType, HostType, Tag)),
                    {ok, Res};
                {error, _} = Error ->
                    Error
            end
    end.

open(generic, Name, Kind, PoolOpts, _ConnOpts, Path) ->
    N = case setting(workers, Kind, PoolOpts) of
            W when is_integer(W), W > 0, W =< 100000 -> W;
            _ -> 1 % invalid: the NIF refuses the options before using this
        end,
    Executors = mongoose_native_nif:generic_executors(N),
    case mongoose_native_sup:start_executors(Name, Executors, N) of
        {ok, _Sup} ->
            Start = fun(Pid, Tag) ->
                            mongoose_native_nif:generic_start(Executors, PoolOpts, Path, Pid, Tag)
                    end,
            Result = mongoose_native_nif:start(Start, ?START_TIMEOUT),
            case Result of
                {ok, _} -> ok;
                _ -> mongoose_native_sup:stop_executors(Name)
            end,
            Result;
        {error, Reason} ->
            {error, {executors_not_started, Reason}}
    end;
open(PoolType, _Name, _Kind, PoolOpts, ConnOpts, Path) ->
    Type = atom_to_binary(PoolType),
    Start = fun(Pid, Tag) ->
                    mongoose_native_nif:pool_start(Type, PoolOpts, ConnOpts, Path, Pid, Tag)
            end,
    mongoose_native_nif:start(Start, ?START_TIMEOUT).

-spec stop() -> [ok].
stop() ->
    [stop(Type, Host, Tag) || {Type, Host, Tag} <- get_pools()].

-spec stop(pool_type()) -> ok.
stop(PoolType) ->
    stop(PoolType, global).

-spec stop(pool_type(), host_type()) -> ok.
stop(PoolType, HostType) ->
    stop(PoolType, HostType, default).

-spec stop(pool_type(), host_type(), tag()) -> ok.
stop(PoolType, HostType, Tag) ->
    Name = {PoolType, HostType, Tag},
    case lookup(Name) of
        #pool{res = Res} ->
            persistent_term:erase(?KEY(Name)),
            mongoose_native_nif:stop(Res),
            mongoose_native_instrument:tear_down(instrumentation(PoolType, HostType, Tag)),
            PoolType =:= generic andalso mongoose_native_sup:stop_executors(Name),
            ok;
        undefined ->
            ok
    end.

-spec is_configured(pool_type()) -> boolean().
is_configured(PoolType) ->
    lists:any(fun(#{type := Type}) -> Type =:= PoolType;
                 (T) when is_tuple(T) -> element(1, T) =:= PoolType
              end, mongoose_native_config:outgoing_pools()).

%%--------------------------------------------------------------------
%% Requests
%%--------------------------------------------------------------------

-spec call(pool_type(), term()) -> term().
call(PoolType, Request) ->
    call(PoolType, global, Request).

-spec call(pool_type(), host_type(), term()) -> term().
call(PoolType, HostType, Request) ->
    call(PoolType, HostType, default, Request).

%% The calls take no fun (see mongoose_native_nif:call/2).
-spec call(pool_type(), host_type(), tag(), term()) -> term().
call(PoolType, HostType, Tag, Request) ->
    case get_pool(PoolType, HostType, Tag) of
        {ok, P} -> call_pool(P, -1, Request, P#pool.call_timeout);
        Error -> Error
    end.

-spec call(pool_type(), host_type(), tag(), term(), term()) -> term().
call(PoolType, HostType, Tag, HashKey, Request) ->
    case get_pool(PoolType, HostType, Tag) of
        {ok, P} -> call_pool(P, hash(P, HashKey), Request, P#pool.call_timeout);
        Error -> Error
    end.

%% @doc A call with its own timeout instead of the pool's `call_timeout'.
-spec call_with_timeout(pool_type(), host_type(), tag(), term(), timeout()) -> term().
call_with_timeout(PoolType, HostType, Tag, Request, Timeout) ->
    with_pool(PoolType, HostType, Tag, fun(P) -> call_pool(P, -1, Request, Timeout) end).

%% @doc A request answered in parts (pages, streamed results): `Fun(Part,
%% Acc)' folds each part in the caller as it arrives, the next produced only
%% after it, each within the pool's `call_timeout'. Returns `{Final, Acc}',
%% `Final' the answer after the last part; a timeout exits as `call' does.
-spec stream(pool_type(), host_type(), tag(), term(), term(), fun((term(), Acc) -> Acc), Acc) ->
          {term(), Acc} | {error, term()}.
stream(PoolType, HostType, Tag, HashKey, Request, Fun, Acc0) ->
    with_pool(PoolType, HostType, Tag,
              fun(P = #pool{res = Res, call_timeout = Timeout}) ->
                      Hash = hash(P, HashKey),
                      Submit = fun(Pid, Ref) ->
                                       mongoose_native_nif:stream(Res, Hash, Request, Pid, Ref)
                               end,
                      case mongoose_native_nif:fold(Submit, Fun, Acc0, Timeout) of
                          {reply, Final, Acc} -> {unwrap(P, Final), Acc};
                          {timeout, _} -> exit_timeout(P, Timeout);
                          {error, Reason} -> refused(Reason)
                      end
              end).

-spec send_request(pool_type(), term()) -> reference() | {error, term()}.
send_request(PoolType, Request) ->
    send_request(PoolType, global, Request).

-spec send_request(pool_type(), host_type(), term()) -> reference() | {error, term()}.
send_request(PoolType, HostType, Request) ->
    send_request(PoolType, HostType, default, Request).

%% @doc Returns a request id for gen_server:wait_response/2 and
%% gen_server:receive_response/2.
-spec send_request(pool_type(), host_type(), tag(), term()) -> reference() | {error, term()}.
send_request(PoolType, HostType, Tag, Request) ->
    with_pool(PoolType, HostType, Tag, fun(P) -> request_pool(P, -1, Request) end).

-spec send_request(pool_type(), host_type(), tag(), term(), term()) ->
          reference() | {error, term()}.
send_request(PoolType, HostType, Tag, HashKey, Request) ->
    with_pool(PoolType, HostType, Tag, fun(P) -> request_pool(P, hash(P, HashKey), Request) end).

-spec cast(pool_type(), term()) -> ok | {error, term()}.
cast(PoolType, Request) ->
    cast(PoolType, global, Request).

-spec cast(pool_type(), host_type(), term()) -> ok | {error, term()}.
cast(PoolType, HostType, Request) ->
    cast(PoolType, HostType, default, Request).

-spec cast(pool_type(), host_type(), tag(), term()) -> ok | {error, term()}.
cast(PoolType, HostType, Tag, Request) ->
    with_pool(PoolType, HostType, Tag, fun(P) -> cast_pool(P, -1, Request) end).

-spec cast(pool_type(), host_type(), tag(), term(), term()) -> ok | {error, term()}.
cast(PoolType, HostType, Tag, HashKey, Request) ->
    with_pool(PoolType, HostType, Tag, fun(P) -> cast_pool(P, hash(P, HashKey), Request) end).

%% MongooseIM's LDAP worker reopens a connection the server closed under a
%% request and retries that request once; the engine has started reopening
%% it when the answer arrives, so the retry waits for the new connection.
call_pool(P = #pool{name = {ldap, _, _}}, Hash, Request, Timeout) ->
    T0 = erlang:monotonic_time(millisecond),
    case submit_call(P, Hash, Request, Timeout) of
        {error, {connection_lost, _}} when is_integer(Timeout) ->
            Left = max(0, Timeout - (erlang:monotonic_time(millisecond) - T0)),
            submit_call(P, Hash, Request, Left);
        {error, {connection_lost, _}} ->
            submit_call(P, Hash, Request, Timeout);
        Result ->
            Result
    end;
call_pool(P, Hash, Request, Timeout) ->
    submit_call(P, Hash, Request, Timeout).

submit_call(P = #pool{res = Res}, Hash, Request, Timeout) ->
    case mongoose_native_nif:call({Res, Hash, Request}, Timeout) of
        {reply, {error, {worker_wait_timeout, _}}} -> exit_timeout(P, Timeout);
        {reply, Result} -> unwrap(P, Result);
        timeout -> exit_timeout(P, Timeout);
        {error, Reason} -> refused(Reason)
    end.

%% The engine's own `available_worker' wait may end first; either way the
%% caller sees what a gen_server:call timeout gives.
exit_timeout(#pool{atom_name = Name}, Timeout) ->
    exit({timeout, {?MODULE, call, [Name, Timeout]}}).

request_pool(#pool{res = Res}, Hash, Request) ->
    ReqId = make_ref(),
    case mongoose_native_nif:submit(Res, Hash, Request, self(), [alias | ReqId]) of
        {ok, _Slot} -> ReqId;
        {error, Reason} -> refused(Reason)
    end.

cast_pool(#pool{res = Res}, Hash, Request) ->
    case mongoose_native_nif:cast(Res, Hash, Request) of
        ok -> ok;
        {error, Reason} -> refused(Reason)
    end.

%% Generic pools answer `{ok, Value}' or `{raised, Class, Reason, Stack}'.
unwrap(#pool{name = {generic, _, _}}, {ok, Value}) -> Value;
unwrap(#pool{name = {generic, _, _}}, {raised, Class, Reason, Stack}) ->
    erlang:raise(Class, Reason, Stack);
%% MongooseIM's LDAP worker answers this while it has no connection.
unwrap(#pool{name = {ldap, _, _}}, {error, {no_connection, _}}) -> {error, not_connected};
unwrap(_, Result) -> Result.

refused({no_available_workers, _}) -> exit(no_available_workers);
refused(Reason) -> {error, Reason}.

hash(#pool{workers = N}, Key) ->
    erlang:phash2(Key, N).

with_pool(PoolType, HostType, Tag, F) ->
    case get_pool(PoolType, HostType, Tag) of
        {ok, Pool} -> F(Pool);
        Error -> Error
    end.

%%--------------------------------------------------------------------
%% Introspection
%%--------------------------------------------------------------------

-spec get_worker(pool_type(), host_type()) -> {error, term()}.
get_worker(PoolType, HostType) ->
    get_worker(PoolType, HostType, default).

%% @doc Workers are NIF tasks, not processes; only generic pools have a
%% process per worker, and only through `call/4' does work reach it.
-spec get_worker(pool_type(), host_type(), tag()) -> {error, term()}.
get_worker(PoolType, HostType, Tag) ->
    with_pool(PoolType, HostType, Tag,
              fun(_) -> {error, {no_worker_process, PoolType}} end).

-spec get_pool_settings(pool_type(), host_type(), tag()) ->
          {mongoose_wpool, pool_name(), atom(), atom(), pos_integer()} | undefined.
get_pool_settings(PoolType, HostType, Tag) ->
    case get_pool(PoolType, HostType, Tag) of
        {ok, #pool{name = Name, atom_name = Atom, strategy = S, call_timeout = T}} ->
            {mongoose_wpool, Name, Atom, S, T};
        {error, {pool_not_started, _}} ->
            undefined
    end.

-spec get_pools() -> [pool_name()].
get_pools() ->
    [Name || #pool{name = Name} <- pools()].

-spec stats(pool_type(), host_type(), tag()) -> [{atom(), term()}] | {error, term()}.
stats(PoolType, HostType, Tag) ->
    case lookup({PoolType, HostType, Tag}) of
        #pool{atom_name = Atom, res = Res} ->
            [{pool, Atom} | mongoose_native_nif:stats(Res)];
        undefined ->
            {error, {pool_not_started, {PoolType, HostType, Tag}}}
    end.

%% @doc MongooseIM 6.3's instrumentation events of a pool: those its
%% `mongoose_wpool_<type>' module declares (rdbms and rabbit), declared at
%% start and torn down at stop through mongoose_native_instrument.
-spec instrumentation(pool_type(), host_type(), tag()) -> [mongoose_native_instrument:spec()].
instrumentation(PoolType, HostType, Tag) ->
    Module = list_to_atom("mongoose_wpool_" ++ atom_to_list(PoolType)),
    case code:ensure_loaded(Module) =:= {module, Module}
        andalso erlang:function_exported(Module, instrumentation, 2) of
        true -> Module:instrumentation(HostType, Tag);
        false -> []
    end.

host_type_label(global) -> <<"global">>;
host_type_label(HostType) -> HostType.

-spec make_pool_name(pool_type(), atom() | binary(), tag()) -> atom().
make_pool_name(PoolType, HostType, Tag) when is_atom(HostType) ->
    make_pool_name(PoolType, atom_to_binary(HostType, utf8), Tag);
make_pool_name(PoolType, HostType, Tag) when is_binary(HostType) ->
    binary_to_atom(<<"mongoose_wpool$", (atom_to_binary(PoolType, utf8))/binary, $$,
                     HostType/binary, $$, (atom_to_binary(Tag, utf8))/binary>>, utf8).

%% @doc What library modules that talk to a pool's NIF resource directly
%% need (mongoose_rdbms's transactions): the resource, the pool's name and
%% call_timeout. Host types fall back to the global pool as calls do.
-spec get_pool_handle(pool_type(), host_type(), tag()) -> {ok, map()} | {error, term()}.
get_pool_handle(PoolType, HostType, Tag) ->
    case get_pool(PoolType, HostType, Tag) of
        {ok, #pool{name = Name, atom_name = Atom, call_timeout = T, res = Res}} ->
            {ok, #{name => Name, atom_name => Atom, call_timeout => T, res => Res}};
        Error ->
            Error
    end.

%% @doc The NIF resources of the running pools of a type and host type, by
%% tag, for library code that shares one (mod_global_distrib's mapping uses
%% the redis pool its options name).
-spec get_pool_resources(pool_type(), host_type()) -> #{tag() => reference()}.
get_pool_resources(PoolType, HostType) ->
    maps:from_list([{Tag, Res} || #pool{name = {T, H, Tag}, res = Res} <- pools(),
                                  T =:= PoolType, H =:= HostType]).

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

get_pool(PoolType, HostType, Tag) ->
    case lookup({PoolType, HostType, Tag}) of
        #pool{} = Pool -> {ok, Pool};
        _ when is_binary(HostType) -> get_pool(PoolType, global, Tag);
        _ -> {error, {pool_not_started, {PoolType, HostType, Tag}}}
    end.

lookup(Name) ->
    persistent_term:get(?KEY(Name), undefined).

pools() ->
    [Pool || {?KEY(_), #pool{} = Pool} <- persistent_term:get()].

%% Where a pool's options sit in MongooseIM's TOML, for error messages.
config_path(PoolType, Tag) ->
    iolist_to_binary(io_lib:format("outgoing_pools.~s.~s", [PoolType, Tag])).

opts_list(Opts) when is_map(Opts) -> {ok, maps:to_list(Opts)};
opts_list(Opts) when is_list(Opts) ->
    try length(Opts) of _ -> {ok, Opts}
    catch error:badarg -> error
    end;
opts_list(_) -> error.

%% An option as the pool has it: set, or the kind's default.
setting(Key, Kind, Opts) ->
    proplists:get_value(Key, Opts, maps:get(Key, Kind)).
