%% @doc Sends a stanza to another datacenter over the transport, keyed by
%% its sender (CONTRACTS.md section 2). A stanza for a host with no enabled
%% endpoint waits, as in MongooseIM, for the host's server manager to find
%% one (starting the manager first; at most 5 s) and is tried once more. A
%% host whose endpoints are known but cannot be reached fails at once, so
%% the stanza is bounced instead of holding up its sender. A process that
%% routes for many senders (the bounce store) calls never_wait/0 first.
-module(mod_global_distrib_sender).

-export([send/2, never_wait/0]).

-define(CONNECTION_TIMEOUT, 5000).
-define(NEVER_WAIT, mod_global_distrib_sender_never_wait).

%% @doc Stanzas this process sends to a host without endpoints fail at
%% once instead of waiting for one.
-spec never_wait() -> ok.
never_wait() ->
    put(?NEVER_WAIT, true),
    ok.

-spec send(binary(), {tuple(), tuple(), term(), tuple()}) -> ok | {error, term()}.
send(Host, {From, To, Acc, Packet}) ->
    FPacket = {From, To, mod_global_distrib_adapter:acc_for_transfer(Acc), Packet},
    Key = mod_global_distrib_utils:recipient_to_worker_key(
            From, mod_global_distrib_utils:opt(global_host)),
    T = mod_global_distrib:transport(),
    %% One connection per sender, not per sending process: the bounce
    %% store's server sends some of a sender's stanzas and its session the
    %% rest, and two connections would not keep them in order.
    Affinity = erlang:phash2(Key),
    case mongoose_native_gd_transport:send(T, Host, Affinity, Key, FPacket) of
        ok ->
            ok;
        {error, {no_connection, _}} = Error ->
            case endpoint_found(Host) of
                true -> mongoose_native_gd_transport:send(T, Host, Affinity, Key, FPacket);
                false -> Error
            end;
        {error, _} = Error ->
            Error
    end.

%% Whether trying once more may work: the host has an enabled endpoint
%% now. Without waiting, only a manager started just now can tell.
endpoint_found(Host) ->
    case get(?NEVER_WAIT) of
        true ->
            mod_global_distrib_server_mgr:ensure_started(Host) =:= {ok, started};
        undefined ->
            element(1, mod_global_distrib_server_mgr:get_connection(
                         Host, ?CONNECTION_TIMEOUT)) =:= ok
    end.
