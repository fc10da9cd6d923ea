%% @doc Polls the session table's `hosts' set every `hosts_refresh_interval'
%% milliseconds and starts a server manager for every remote datacenter it
%% has not seen yet. stop/0 also stops the managers.
%%
%% It also makes the node names of remote datacenters known atoms: stock
%% MongooseIM datacenters send accumulators holding pids and refs of their
%% nodes, which `binary_to_term(Bin, [safe])' decodes only when the node's
%% name already is an atom here. The names come from the session table
%% (where every datacenter's nodes register), never from the wire; a
%% stanza that arrives before the next poll makes its worker read its
%% host's nodes at once (learn_nodes_of/1, at most once a second).
-module(mod_global_distrib_hosts_refresher).
-behaviour(gen_server).

-export([start/0, stop/0, start_link/0, refresh/0, pause/0, unpause/0, learn_nodes_of/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).
-export([instrumentation/1]).

%% @doc MongooseIM 6.3's events of the sending side (declared by this
%% module there, as the owner of the outgoing connections); the NIF counts
%% them and mongoose_native_metrics executes them.
-spec instrumentation(term()) -> [mongoose_native_instrument:spec()].
instrumentation(_HostType) ->
    [{mod_global_distrib_outgoing_messages, #{}, #{metrics => #{count => spiral}}},
     {mod_global_distrib_outgoing_queue, #{}, #{metrics => #{time => histogram}}},
     {mod_global_distrib_outgoing_established, #{}, #{metrics => #{count => spiral}}},
     {mod_global_distrib_outgoing_errored, #{}, #{metrics => #{count => spiral}}},
     {mod_global_distrib_outgoing_closed, #{}, #{metrics => #{count => spiral}}}].

start() ->
    {ok, _} = mongoose_native_sup:start_child(#{id => ?MODULE, start => {?MODULE, start_link, []}}),
    ok.

stop() ->
    mongoose_native_sup:stop_child(?MODULE),
    [mod_global_distrib_server_mgr:stop(Host) || Host <- mod_global_distrib_server_mgr:running()],
    ok.

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Reads the hosts now; returns when their managers are started.
refresh() ->
    gen_server:call(?MODULE, refresh, 30000).

pause() ->
    gen_server:call(?MODULE, pause).

unpause() ->
    gen_server:call(?MODULE, unpause).

init([]) ->
    Interval = max(1, mod_global_distrib_utils:opt(hosts_refresh_interval)),
    %% The first refresh runs once this process is started: managers are
    %% children of the same supervisor.
    {ok, #{interval => Interval, timer => erlang:start_timer(0, self(), refresh)}}.

handle_call(refresh, _From, State) ->
    do_refresh(),
    {reply, ok, State};
handle_call(pause, _From, State = #{timer := T}) ->
    _ = is_reference(T) andalso erlang:cancel_timer(T),
    {reply, ok, State#{timer := undefined}};
handle_call(unpause, _From, State = #{timer := undefined}) ->
    {reply, ok, schedule(State)};
handle_call(unpause, _From, State) ->
    {reply, ok, State};
handle_call(_Msg, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info({timeout, T, refresh}, State = #{timer := T}) ->
    do_refresh(),
    {noreply, schedule(State)};
handle_info(_Msg, State) ->
    {noreply, State}.

schedule(State = #{interval := Interval}) ->
    State#{timer := erlang:start_timer(Interval, self(), refresh)}.

do_refresh() ->
    LocalHost = mod_global_distrib_utils:opt(local_host),
    try mod_global_distrib_mapping:hosts() of
        Hosts ->
            [begin
                 learn_nodes(Host),
                 case mod_global_distrib_server_mgr:ensure_started(Host) of
                     {ok, _} -> ok;
                     {error, Reason} ->
                         mod_global_distrib_adapter:log_warning(gd_server_mgr_start_failed,
                                                                #{server => Host, reason => Reason})
                 end
             end || Host <- Hosts, Host =/= LocalHost],
            ok
    catch Class:Reason ->
            mod_global_distrib_adapter:log_warning(gd_hosts_refresh_failed,
                                                   #{class => Class, reason => Reason})
    end.

%% @doc For a stanza from `Host' that did not decode: reads the host's
%% nodes unless this process did so less than a second ago (a peer sending
%% garbage must not turn into a Redis query per frame).
-spec learn_nodes_of(binary()) -> retry | give_up.
learn_nodes_of(Host) ->
    Now = erlang:monotonic_time(millisecond),
    case get({?MODULE, learnt, Host}) of
        Last when is_integer(Last), Now - Last < 1000 ->
            give_up;
        _ ->
            put({?MODULE, learnt, Host}, Now),
            try learn_nodes(Host), retry
            catch _:_ -> give_up
            end
    end.

learn_nodes(Host) ->
    [_ = binary_to_atom(Node, utf8) || Node <- mod_global_distrib_mapping:nodes(Host),
                                       is_node_name(Node)],
    ok.

%% `name@host', as an Erlang node is named (at most 255 characters).
is_node_name(Node) ->
    byte_size(Node) =< 255 andalso
        case binary:split(Node, <<"@">>, [global]) of
            [Name, HostPart] -> Name =/= <<>> andalso HostPart =/= <<>>;
            _ -> false
        end.
