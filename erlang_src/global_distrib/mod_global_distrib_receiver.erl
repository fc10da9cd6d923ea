%% @doc Stanzas from other datacenters: the transport calls handle/4 in one
%% of its ordered workers (one per worker key), so a sender's stanzas are
%% routed here in the order they were sent. The stanza's origin teaches
%% the local cache where its sender is; then routing starts over on this
%% datacenter (mod_global_distrib:maybe_reroute/3 sees its metadata).
-module(mod_global_distrib_receiver).

-export([handle/4, instrumentation/1]).

%% @doc MongooseIM 6.3's events of the receiving side. The transport's
%% workers execute the per-stanza ones (queue time, transfer time,
%% messages, see mongoose_native_gd_worker); mongoose_native_metrics the
%% connection counters the NIF keeps.
-spec instrumentation(term()) -> [mongoose_native_instrument:spec()].
instrumentation(_HostType) ->
    [{mod_global_distrib_incoming_queue, #{}, #{metrics => #{time => histogram}}},
     {mod_global_distrib_incoming_established, #{}, #{metrics => #{count => spiral}}},
     {mod_global_distrib_incoming_errored, #{}, #{metrics => #{count => spiral}}},
     {mod_global_distrib_incoming_closed, #{}, #{metrics => #{count => spiral}}},
     {mod_global_distrib_incoming_transfer, #{}, #{metrics => #{time => histogram}}},
     {mod_global_distrib_incoming_messages, #{}, #{metrics => #{count => spiral}}},
     {mod_global_distrib_incoming_first_packet, #{}, #{metrics => #{count => spiral}}}].

-spec handle(binary(), integer(), binary(), term()) -> any().
%% (The transport measures the transfer time, per remote host.)
handle(FromHost, _TransferUs, _Key, {From, To, Acc0, Packet}) ->
    case mod_global_distrib_utils:started() of
        true ->
            Acc = mod_global_distrib_adapter:acc_after_transfer(Acc0),
            mod_global_distrib_utils:maybe_update_mapping(From, Acc),
            mod_global_distrib_adapter:route(From, To, Acc, Packet);
        false ->
            mod_global_distrib_adapter:log_warning(gd_incoming_dropped,
                                                   #{from_host => FromHost,
                                                     reason => not_started})
    end;
handle(FromHost, _TransferUs, Key, Other) ->
    mod_global_distrib_adapter:log_warning(gd_incoming_malformed,
                                           #{from_host => FromHost, key => Key,
                                             term => Other}).
