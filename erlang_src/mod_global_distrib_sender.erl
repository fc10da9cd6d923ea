%% @doc Sends a stanza to another datacenter over the transport, keyed by
%% its sender (CONTRACTS.md section 2). The first stanza for a host with no
%% known endpoint starts that host's server manager (which reads the
%% endpoints from the session table) and is tried once more; after that, a
%% host without a connection fails at once instead of waiting.
-module(mod_global_distrib_sender).

-export([send/2]).

-spec send(binary(), {tuple(), tuple(), term(), tuple()}) -> ok | {error, term()}.
send(Host, {From, To, Acc, Packet}) ->
    FPacket = {From, To, mod_global_distrib_adapter:acc_for_transfer(Acc), Packet},
    Key = mod_global_distrib_utils:recipient_to_worker_key(
            From, mod_global_distrib_utils:opt(global_host)),
    T = mod_global_distrib:transport(),
    case mongoose_native_gd_transport:send(T, Host, Key, FPacket) of
        ok ->
            ok;
        {error, {no_connection, _}} = Error ->
            case mod_global_distrib_server_mgr:ensure_started(Host) of
                {ok, started} -> mongoose_native_gd_transport:send(T, Host, Key, FPacket);
                _ -> Error
            end;
        {error, _} = Error ->
            Error
    end.
