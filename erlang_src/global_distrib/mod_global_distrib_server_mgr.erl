%% @doc One manager per remote datacenter (host): reads the host's
%% endpoints from the session table every `endpoint_refresh_interval'
%% seconds (`endpoint_refresh_interval_when_empty' while there are none),
%% resolves them, and tells the transport which endpoints to keep
%% connections to. An endpoint that vanished from the table is disabled:
%% its connections are kept (stanzas already queued on them still go out)
%% until the `disabled_gc_interval' sweep or close_disabled/1 drops it.
%% get_connection/1 waits, as MongooseIM's does, while the host has no
%% enabled endpoint: its callers are answered when a refresh finds one.
-module(mod_global_distrib_server_mgr).
-behaviour(gen_server).

-export([start_link/1, ensure_started/1, stop/1, running/0]).
-export([get_connection/1, get_connection/2]).
-export([get_enabled_endpoints/1, get_disabled_endpoints/1, force_refresh/1,
         close_disabled/1, get_state_info/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(CALL_TIMEOUT, 15000).
%% How long get_connection/1 waits for an endpoint: gen_server's default
%% call timeout, which MongooseIM's own get_connection/1 uses.
-define(CONNECTION_TIMEOUT, 5000).

-type endpoint() :: {inet:ip_address(), inet:port_number()}.

%%--------------------------------------------------------------------
%% API
%%--------------------------------------------------------------------

start_link(Server) when is_binary(Server) ->
    gen_server:start_link({local, mod_global_distrib_utils:server_to_mgr_name(Server)},
                          ?MODULE, Server, []).

%% @doc `{ok, started}' when this call started the manager (its endpoints
%% are known when it returns), `{ok, running}' when it was there already.
-spec ensure_started(binary()) -> {ok, started | running} | {error, term()}.
ensure_started(Server) ->
    case whereis(mod_global_distrib_utils:server_to_mgr_name(Server)) of
        Pid when is_pid(Pid) ->
            {ok, running};
        undefined ->
            Spec = #{id => {?MODULE, Server}, start => {?MODULE, start_link, [Server]}},
            case mongoose_native_sup:start_child(Spec) of
                {ok, _} -> {ok, started};
                {error, {already_started, _}} -> {ok, running};
                {error, already_present} ->
                    mongoose_native_sup:stop_child({?MODULE, Server}),
                    ensure_started(Server);
                {error, _} = Error -> Error
            end
    end.

stop(Server) ->
    mongoose_native_sup:stop_child({?MODULE, Server}).

%% @doc The hosts that have a manager on this node.
running() ->
    [Server || {{?MODULE, Server}, Pid, _, _} <- supervisor:which_children(mongoose_native_sup),
               is_pid(Pid)].

%% @doc One enabled endpoint of `Server' (connections themselves live in
%% the transport); while there is none, waits until a refresh finds one.
%% Exits with `timeout' after 5 s, as MongooseIM's does.
-spec get_connection(binary()) -> {ok, endpoint()}.
get_connection(Server) ->
    call(Server, get_connection, ?CONNECTION_TIMEOUT).

%% @doc As get_connection/1, starting the manager first when needed, and
%% with `{error, Reason}' instead of an exit.
-spec get_connection(binary(), timeout()) -> {ok, endpoint()} | {error, term()}.
get_connection(Server, Timeout) ->
    case ensure_started(Server) of
        {ok, _} ->
            try call(Server, get_connection, Timeout)
            catch exit:{Reason, _} -> {error, Reason}
            end;
        {error, _} = Error ->
            Error
    end.

-spec get_enabled_endpoints(binary()) -> [endpoint()].
get_enabled_endpoints(Server) ->
    call(Server, get_enabled_endpoints).

-spec get_disabled_endpoints(binary()) -> [endpoint()].
get_disabled_endpoints(Server) ->
    call(Server, get_disabled_endpoints).

%% @doc Reads the endpoints now; returns when the transport has them.
-spec force_refresh(binary()) -> ok.
force_refresh(Server) ->
    call(Server, force_refresh).

%% @doc Drops every disabled endpoint now.
-spec close_disabled(binary()) -> ok.
close_disabled(Server) ->
    call(Server, close_disabled).

-spec get_state_info(binary()) -> map().
get_state_info(Server) ->
    call(Server, get_state_info).

call(Server, Msg) ->
    call(Server, Msg, ?CALL_TIMEOUT).

call(Server, Msg, Timeout) ->
    gen_server:call(mod_global_distrib_utils:server_to_mgr_name(Server), Msg, Timeout).

%%--------------------------------------------------------------------
%% gen_server
%%--------------------------------------------------------------------

init(Server) ->
    Opts = mod_global_distrib_utils:opts(),
    State0 = #{server => Server, enabled => [], disabled => [], last_endpoints => undefined,
               refresh_interval => maps:get(endpoint_refresh_interval, Opts),
               refresh_interval_when_empty => maps:get(endpoint_refresh_interval_when_empty, Opts),
               gc_interval => maps:get(disabled_gc_interval, Opts),
               refresh_timer => undefined, waiting => []},
    State = schedule_refresh(refresh(State0)),
    erlang:send_after(timer:seconds(maps:get(gc_interval, State)), self(), disabled_gc),
    {ok, State}.

handle_call(get_connection, From, State = #{enabled := [], waiting := Waiting}) ->
    {noreply, State#{waiting := [From | Waiting]}};
handle_call(get_connection, _From, State = #{enabled := Enabled}) ->
    {reply, {ok, pick(Enabled)}, State};
handle_call(force_refresh, _From, State) ->
    {reply, ok, schedule_refresh(refresh(State))};
handle_call(close_disabled, _From, State) ->
    {reply, ok, close(State)};
handle_call(get_enabled_endpoints, _From, State = #{enabled := Enabled}) ->
    {reply, Enabled, State};
handle_call(get_disabled_endpoints, _From, State = #{disabled := Disabled}) ->
    {reply, Disabled, State};
handle_call(get_state_info, _From, State) ->
    {reply, maps:without([refresh_timer, waiting], State), State};
handle_call(_Msg, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info({timeout, Ref, refresh}, State = #{refresh_timer := Ref}) ->
    {noreply, schedule_refresh(refresh(State))};
handle_info(disabled_gc, State = #{gc_interval := Gc}) ->
    erlang:send_after(timer:seconds(Gc), self(), disabled_gc),
    {noreply, close(State)};
handle_info(_Msg, State) ->
    {noreply, State}.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

refresh(State = #{server := Server, enabled := Enabled0, disabled := Disabled0}) ->
    try mod_global_distrib_utils:resolve_endpoints(mod_global_distrib_mapping:endpoints(Server)) of
        Endpoints ->
            Vanished = Enabled0 -- Endpoints,
            Disabled = lists:usort(Disabled0 ++ Vanished) -- Endpoints,
            case {Endpoints -- Enabled0, Vanished} of
                {[], []} -> ok;
                {New, _} ->
                    mod_global_distrib_adapter:log_info(
                      gd_endpoints_changed, #{server => Server, enabled => New,
                                              disabled => Vanished})
            end,
            answer_waiting(apply_endpoints(State#{enabled := Endpoints, disabled := Disabled,
                                                  last_endpoints := Endpoints}))
    catch Class:Reason ->
            mod_global_distrib_adapter:log_warning(gd_endpoints_refresh_failed,
                                                   #{server => Server, class => Class,
                                                     reason => Reason}),
            State
    end.

%% Callers of get_connection that waited for an endpoint, oldest first
%% (a caller that gave up meanwhile drops its late answer).
answer_waiting(State = #{enabled := [_ | _] = Enabled, waiting := [_ | _] = Waiting}) ->
    [gen_server:reply(From, {ok, pick(Enabled)}) || From <- lists:reverse(Waiting)],
    State#{waiting := []};
answer_waiting(State) ->
    State.

pick(Enabled) ->
    lists:nth(rand:uniform(length(Enabled)), Enabled).

close(State = #{disabled := []}) ->
    State;
close(State) ->
    apply_endpoints(State#{disabled := []}).

apply_endpoints(State = #{server := Server, enabled := Enabled, disabled := Disabled}) ->
    case mongoose_native_gd_transport:set_endpoints(mod_global_distrib:transport(), Server,
                                                    Enabled, Disabled) of
        ok -> ok;
        {error, Reason} ->
            mod_global_distrib_adapter:log_warning(gd_set_endpoints_failed,
                                                   #{server => Server, reason => Reason})
    end,
    State.

schedule_refresh(State = #{refresh_timer := Old, enabled := Enabled}) ->
    _ = is_reference(Old) andalso erlang:cancel_timer(Old),
    Interval = case Enabled of
                   [] -> maps:get(refresh_interval_when_empty, State);
                   _ -> maps:get(refresh_interval, State)
               end,
    State#{refresh_timer := erlang:start_timer(timer:seconds(Interval), self(), refresh)}.
