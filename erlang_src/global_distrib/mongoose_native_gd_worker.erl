%% @doc The ordered workers incoming global-distribution stanzas reach, in
%% batches: `{gd_packets, Credit, Host, ReceivedUs, [{TransferUs, Key, Bin}]}'.
%% Stanzas are decoded with `binary_to_term(Bin, [safe])'; one that does not
%% decode is offered to the `undecodable' callback, if any (which may make
%% it decodable: `retry'), else logged and dropped, as is one whose handler
%% fails: the worker goes on.
%% Outgoing stanzas the NIF could not write come back as
%% `{gd_undeliverable, Credit, Host, [{SentUs, Bin}]}' (to the worker of
%% their key, so they are handled in order) for the `undeliverable'
%% callback; their connection opens again once they are acknowledged.
%% A handled batch is acknowledged to the NIF, whose readers stop taking
%% frames for a worker that is far behind. A restarted worker tells the NIF
%% its new pid (the stanzas its predecessor held are lost with it).
-module(mongoose_native_gd_worker).
-behaviour(supervisor).
-export([start_sup/4, init/1, start_link/4, loop/2, attach/3, detach/1]).

%% QueueTime: a mongoose_native_histogram of the microseconds a stanza
%% waited between the NIF reading it and a worker taking it. Id names the
%% transport.
start_sup(Handler, QueueTime, N, Id) ->
    supervisor:start_link(?MODULE, {Handler, QueueTime, N, Id}).

init({Handler, QueueTime, N, Id}) ->
    Children = [#{id => I, start => {?MODULE, start_link, [Handler, QueueTime, Id, I]}}
                || I <- lists:seq(1, N)],
    {ok, {#{strategy => one_for_one, intensity => 100, period => 1}, Children}}.

start_link(Handler, QueueTime, Id, Index) ->
    Pid = proc_lib:spawn_link(?MODULE, loop, [callbacks(Handler), QueueTime]),
    case persistent_term:get({?MODULE, Id}, undefined) of
        undefined -> ok;
        Res -> mongoose_native_nif:gd_transport_set_worker(Res, Index, Pid)
    end,
    {ok, Pid}.

%% @doc The transport `Res' of the workers under `Sup' is running: from
%% now on a restarted worker registers its new pid there.
attach(Id, Sup, Res) ->
    persistent_term:put({?MODULE, Id}, Res),
    %% A worker restarted before this point registers here.
    [mongoose_native_nif:gd_transport_set_worker(Res, I, Pid)
     || {I, Pid, _, _} <- supervisor:which_children(Sup), is_pid(Pid)],
    ok.

detach(Id) ->
    _ = persistent_term:erase({?MODULE, Id}),
    ok.

loop(Handler, QueueTime) ->
    receive
        {gd_packets, Credit, Host, ReceivedUs, Packets} ->
            Instrumented = mongoose_native_instrument:enabled(),
            [begin
                 QueueUs = erlang:system_time(microsecond) - ReceivedUs,
                 mongoose_native_histogram:add(QueueTime, QueueUs),
                 Instrumented andalso instrument(Host, QueueUs, TransferUs),
                 handle(Handler, Host, TransferUs, Key, Bin)
             end || {TransferUs, Key, Bin} <- Packets],
            mongoose_native_nif:gd_transport_ack(Credit, length(Packets)),
            loop(Handler, QueueTime);
        {gd_undeliverable, Credit, Host, Stanzas} ->
            #{undeliverable := Undeliverable} = Handler,
            %% Encoded on this node by send/4: no safe decoding needed.
            [try Undeliverable(Host, SentUs, binary_to_term(Bin))
             catch Class:Reason ->
                     logger:warning(#{what => gd_undeliverable_handler_failed, to_host => Host,
                                      class => Class, reason => Reason})
             end || {SentUs, Bin} <- Stanzas],
            mongoose_native_nif:gd_transport_ack(Credit, length(Stanzas)),
            loop(Handler, QueueTime);
        _ ->
            loop(Handler, QueueTime)
    end.

%% MongooseIM's per-stanza events, as its mod_global_distrib_worker executes
%% them (declared by mod_global_distrib, whose transport this is).
instrument(Host, QueueUs, TransferUs) ->
    mongoose_native_instrument:execute(mod_global_distrib_incoming_queue, #{},
                                       #{time => QueueUs, host => Host}),
    mongoose_native_instrument:execute(mod_global_distrib_incoming_transfer, #{},
                                       #{time => TransferUs, host => Host}),
    mongoose_native_instrument:execute(mod_global_distrib_incoming_messages, #{},
                                       #{count => 1, host => Host}).

callbacks(Handle) when is_function(Handle, 4) ->
    #{handle => Handle, undecodable => fun(_Host) -> give_up end,
      undeliverable => fun(Host, _SentUs, _Term) ->
                               logger:warning(#{what => gd_undeliverable_stanza, to_host => Host})
                       end};
callbacks(#{handle := Handle} = Callbacks) when is_function(Handle, 4) ->
    maps:merge(callbacks(Handle), Callbacks).

handle(Callbacks = #{undecodable := Undecodable}, Host, TransferUs, Key, Bin) ->
    case decode(Bin) of
        {ok, Term} ->
            handle_term(Callbacks, Host, TransferUs, Key, Term);
        error ->
            case Undecodable(Host) =:= retry andalso decode(Bin) of
                {ok, Term} ->
                    handle_term(Callbacks, Host, TransferUs, Key, Term);
                _ ->
                    logger:warning(#{what => gd_undecodable_stanza, from_host => Host,
                                     size => byte_size(Bin)})
            end
    end.

decode(Bin) ->
    try {ok, binary_to_term(Bin, [safe])}
    catch error:badarg -> error
    end.

handle_term(#{handle := Handle}, Host, TransferUs, Key, Term) ->
    try Handle(Host, TransferUs, Key, Term)
    catch Class:Reason ->
            logger:warning(#{what => gd_handler_failed, from_host => Host,
                             class => Class, reason => Reason})
    end.
