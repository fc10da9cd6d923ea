%% @doc Global-distribution transport on the NIF: listeners, connections to
%% other datacenters, MongooseIM's wire format. Incoming stanzas reach
%% `Handler(Host, TransferTimeUs, WorkerKey, {From, To, Acc, Packet})' in
%% one of `workers' ordered processes: all stanzas of one worker key are
%% handled by the same process, in arrival order. A sending process always
%% uses the same connection to a host (send/4), as do stanzas sent with one
%% affinity (send/5), so they stay in order too.
-module(mongoose_native_gd_transport).
-export([start/3, stop/1, send/4, send/5, set_endpoints/3, set_endpoints/4, endpoints/2,
         disabled_endpoints/2, listening/1, metrics/1, queue_times/2]).

%% Reading the TLS files and binding the listeners.
-define(START_TIMEOUT, 60000).

-type t() :: #{res := reference(), id := term(), queue_time := map()}.
%% `undecodable(Host)' is called when a stanza from Host does not decode
%% safely; `retry' has it decoded once more. `undeliverable(Host, SentUs,
%% Term)' gets each stanza send/4 accepted for Host (at SentUs, system time
%% in microseconds) and could not write because its connection failed, in
%% the worker of its key, in order, before that connection is opened again;
%% by default it is logged.
-type handler() :: fun((binary(), integer(), binary(), term()) -> any())
                 | #{handle := fun((binary(), integer(), binary(), term()) -> any()),
                     undecodable => fun((binary()) -> retry | give_up),
                     undeliverable => fun((binary(), integer(), term()) -> any())}.
-export_type([t/0, handler/0]).

%% Opts: `local_host' (binary), `endpoints' ([{Address, Port}] to listen on),
%% `connections_per_endpoint', `max_frame_size', `queue_len', `tls'
%% (`#{certfile, cacertfile, ciphers, dhfile}').
-spec start(map(), handler(), pos_integer()) -> {ok, t()} | {error, term()}.
start(Opts, Handler, Workers) when (is_function(Handler, 4) orelse is_map(Handler)),
                                   Workers > 0 ->
    ok = mongoose_wpool:ensure_started(),
    Id = {gd_transport, make_ref()},
    QueueTime = mongoose_native_histogram:new(log2),
    Spec = #{id => Id, type => supervisor,
             start => {mongoose_native_gd_worker, start_sup, [Handler, QueueTime, Workers, Id]}},
    {ok, Sup} = mongoose_native_sup:start_child(Spec),
    Pids = [Pid || {_, Pid, _, _} <- lists:keysort(1, supervisor:which_children(Sup))],
    Start = fun(Pid, Tag) -> mongoose_native_nif:gd_transport_start(Opts, Pids, Pid, Tag) end,
    case mongoose_native_nif:start(Start, ?START_TIMEOUT) of
        {ok, Res} ->
            ok = mongoose_native_gd_worker:attach(Id, Sup, Res),
            {ok, #{res => Res, id => Id, queue_time => QueueTime}};
        Error -> mongoose_native_sup:stop_child(Id), Error
    end.

-spec stop(t()) -> ok.
stop(#{res := Res, id := Id}) ->
    mongoose_native_nif:gd_transport_stop(Res),
    mongoose_native_gd_worker:detach(Id),
    mongoose_native_sup:stop_child(Id).

%% @doc Queues a stanza for `Host'; `{error, {no_connection, _}}' when no
%% endpoint of that host is known, its connection is down or its queue is
%% full. An accepted stanza is written, or handed to `undeliverable': it is
%% lost only when written to a connection that then died.
-spec send(t(), binary(), binary(), term()) -> ok | {error, term()}.
send(T, Host, Key, Term) ->
    send(T, Host, erlang:phash2(self()), Key, Term).

%% @doc As send/4, on the connection that `Affinity' picks: stanzas sent
%% with one affinity share a connection, so they stay in order whichever
%% process sends them (mod_global_distrib_sender passes a hash of the
%% sender's worker key: a sender's stanzas that the bounce store routes go
%% the way of those its session sends).
-spec send(t(), binary(), non_neg_integer(), binary(), term()) -> ok | {error, term()}.
send(#{res := Res}, Host, Affinity, Key, Term) ->
    mongoose_native_nif:gd_transport_send(Res, Host, Affinity, Key, term_to_binary(Term)).

-type endpoint() :: {inet:ip_address() | string() | binary(), inet:port_number()}.

%% @doc The endpoints of `Host', all enabled.
-spec set_endpoints(t(), binary(), [endpoint()]) -> ok | {error, term()}.
set_endpoints(T, Host, Endpoints) ->
    set_endpoints(T, Host, Endpoints, []).

%% @doc `Enabled' endpoints take new stanzas; `Disabled' ones keep their
%% connections (which finish their queues) but take nothing new; endpoints
%% in neither list are closed once their queues drain.
-spec set_endpoints(t(), binary(), [endpoint()], [endpoint()]) -> ok | {error, term()}.
set_endpoints(#{res := Res}, Host, Enabled, Disabled) ->
    mongoose_native_nif:gd_transport_set_endpoints(Res, Host, Enabled, Disabled).

%% @doc The enabled endpoints of `Host'.
endpoints(#{res := Res}, Host) ->
    mongoose_native_nif:gd_transport_endpoints(Res, Host).

%% @doc The disabled endpoints of `Host' whose connections are still kept.
disabled_endpoints(#{res := Res}, Host) ->
    mongoose_native_nif:gd_transport_disabled_endpoints(Res, Host).

%% @doc Where the listeners are bound (a port 0 resolved).
listening(#{res := Res}) ->
    mongoose_native_nif:gd_transport_listening(Res).

%% @doc Each outgoing stanza's queue time in microseconds since the last
%% call, per host (`[{Host, [Us]}]'), for MongooseIM's per-stanza event;
%% they are kept from now on only when `Keep'.
-spec queue_times(t(), boolean()) -> [{binary(), [non_neg_integer()]}].
queue_times(#{res := Res}, Keep) ->
    mongoose_native_nif:gd_transport_queue_times(Res, Keep).

%% @doc Connection and message counters, and the outgoing (in the NIF) and
%% incoming (before a worker takes the stanza) queue times in microseconds.
metrics(#{res := Res, queue_time := QueueTime}) ->
    (mongoose_native_nif:gd_transport_metrics(Res))#{
      mod_global_distrib_incoming_queue_time => mongoose_native_histogram:snapshot(QueueTime)}.
