%% @doc Loads the Rust library and declares its functions. Every function
%% returns in microseconds; anything that waits answers `{ok, Slot}' and
%% later a message, which `call/2' waits for.
-module(mongoose_native_nif).
-on_load(init/0).

-export([call/2, start/2, fold/4]).

-export([pool_kind/1, pool_start/6, generic_start/5, submit/5, stream/5, more/1, cast/3, cancel/1,
         stats/1, stop/1,
         parse_toml/1, check_toml/1, generic_executors/1, generic_attach/3, generic_done/2,
         set_log_relay/1,
         gd_transport_start/4, gd_transport_send/5, gd_transport_set_endpoints/4,
         gd_transport_endpoints/2, gd_transport_disabled_endpoints/2, gd_transport_listening/1, gd_transport_metrics/1,
         gd_transport_stop/1, gd_transport_ack/2, gd_transport_set_worker/3,
         gd_transport_queue_times/2]).
-export([pool_labels/3, metrics_listen/3, metrics_stop/0, metrics_section/2]).
-export([gd_start/6, gd_stop/0, gd_call/4, gd_metrics/0]).

-export([lease/4, lease_call/4, lease_release/2]).

-define(NOT_LOADED, erlang:nif_error({not_loaded, ?MODULE})).

-type submitter() :: {reference(), integer(), term()}
                   | fun((pid(), reference()) -> {ok, reference()} | {error, term()}).

init() ->
    Path = filename:join(priv_dir(), "mongoose_native_nif"),
    Info = maps:from_list([{Key, Value} || {App, Key} <- [{runtime_threads, threads},
                                                          {runtime_sched_batch, sched_batch},
                                                          {max_request_size, max_request_size}],
                                           {ok, Value} <- [application:get_env(mongoose_native, App)]]),
    case erlang:load_nif(Path, Info) of
        ok ->
            ok;
        {error, {Kind, Text}} ->
            Hint = case Kind of
                       load_failed -> "build it with `rebar3 compile` (the NIF must be "
                                      "built for this Erlang/OTP release)";
                       load -> "check that runtime_threads is a non-negative integer, "
                               "runtime_sched_batch a boolean and max_request_size "
                               "a positive integer";
                       _ -> "rebuild it with `rebar3 compile`"
                   end,
            logger:error(#{what => mongoose_native_nif_not_loaded, path => Path ++ ".so",
                           reason => Kind, text => Text, hint => Hint}),
            {error, {mongoose_native_nif_not_loaded, Path ++ ".so", Kind, Text}}
    end.

%% @doc Runs `Submit(self(), Ref)', a NIF answering `{ok, Slot}' or `{error,
%% Reason}', and waits up to `Timeout' for its `{Ref, Result}'. On timeout
%% the slot is cancelled, so no late answer ever reaches the mailbox. A
%% pool request comes as `{Pool, Hash, Request}' (`submit/5'), not as a
%% fun: on OTP 25 making a fun increments a counter that every scheduler
%% shares, which cost 1.4% of a call's CPU at 128 callers.
-spec call(submitter(), timeout()) -> {reply, term()} | {error, term()} | timeout.
call(Submit, Timeout) ->
    Ref = make_ref(),
    case submit_with(Submit, Ref) of
        {ok, Slot} ->
            receive
                {Ref, Result} -> {reply, Result}
            after Timeout ->
                case cancel(Slot) of
                    cancelled -> timeout;
                    replied -> receive {Ref, Result} -> {reply, Result} end
                end
            end;
        {error, _} = Error ->
            Error
    end.

submit_with({Pool, Hash, Request}, Ref) -> submit(Pool, Hash, Request, self(), Ref);
submit_with(Submit, Ref) -> Submit(self(), Ref).

%% @doc `call/2' for a request answered in parts: `Fun(Part, Acc)' folds
%% each part as it comes, the next one asked for only after it; each part
%% and the final answer must come within `Timeout' of the one before. A
%% `Fun' that raises, or a timeout, cancels the rest.
-spec fold(fun((pid(), reference()) -> {ok, reference()} | {error, term()}),
           fun((term(), Acc) -> Acc), Acc, timeout()) ->
          {reply, term(), Acc} | {error, term()} | {timeout, Acc}.
fold(Submit, Fun, Acc0, Timeout) ->
    Ref = make_ref(),
    case Submit(self(), Ref) of
        {ok, Slot} ->
            try fold_parts(Ref, Slot, Fun, Acc0, Timeout)
            after
                %% Nothing more after this: no part, no answer.
                cancel(Slot),
                receive {Ref, part, _} -> ok after 0 -> ok end
            end;
        {error, _} = Error ->
            Error
    end.

fold_parts(Ref, Slot, Fun, Acc, Timeout) ->
    receive
        {Ref, part, Part} ->
            Acc1 = Fun(Part, Acc),
            more(Slot),
            fold_parts(Ref, Slot, Fun, Acc1, Timeout);
        {Ref, Result} ->
            {reply, Result, Acc}
    after Timeout ->
            case cancel(Slot) of
                cancelled -> {timeout, Acc};
                replied -> receive {Ref, Result} -> {reply, Result, Acc} end
            end
    end.

%% @doc `call/2' for the NIFs that start something: their answer, their
%% refusal, or `{error, {timeout, _}}'.
-spec start(fun((pid(), reference()) -> {ok, reference()} | {error, term()}), timeout()) ->
          term().
start(Start, Timeout) ->
    case call(Start, Timeout) of
        {reply, Result} -> Result;
        {error, _} = Error -> Error;
        timeout -> {error, {timeout, <<"no answer in time">>}}
    end.

priv_dir() ->
    case code:priv_dir(mongoose_native) of
        {error, bad_name} ->
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir ->
            Dir
    end.

pool_kind(_Type) -> ?NOT_LOADED.
pool_start(_Type, _Opts, _ConnOpts, _Path, _Pid, _Tag) -> ?NOT_LOADED.
generic_start(_Executors, _Opts, _Path, _Pid, _Tag) -> ?NOT_LOADED.
%% A request too large to decode in about a millisecond is decoded on a
%% dirty CPU scheduler instead (the NIF answers `reschedule'), so no request
%% holds up a normal scheduler; past `max_request_size' it is refused.
-spec submit(reference(), integer(), term(), pid(), term()) ->
          {ok, reference()} | {error, {atom(), binary()}}.
submit(Pool, Hash, Request, Pid, Tag) ->
    submit(Pool, Hash, Request, Pid, Tag, call).

%% @doc `submit/5' for a request answered in parts (see `fold/4').
-spec stream(reference(), integer(), term(), pid(), term()) ->
          {ok, reference()} | {error, {atom(), binary()}}.
stream(Pool, Hash, Request, Pid, Tag) ->
    submit(Pool, Hash, Request, Pid, Tag, stream).

submit(Pool, Hash, Request, Pid, Tag, Mode) ->
    case submit_nif(Pool, Hash, Request, Pid, Tag, Mode) of
        reschedule -> submit_dirty(Pool, Hash, Request, Pid, Tag, Mode);
        Result -> Result
    end.

%% @doc Hands a generic worker's result to its caller; a large one is
%% copied on a dirty scheduler.
-spec generic_done(reference(), term()) -> ok | error.
generic_done(Done, Result) ->
    case generic_done_nif(Done, Result) of
        reschedule -> generic_done_dirty(Done, Result);
        Answer -> Answer
    end.

-spec cast(reference(), integer(), term()) -> ok | {error, {atom(), binary()}}.
cast(Pool, Hash, Request) ->
    case cast_nif(Pool, Hash, Request) of
        reschedule -> cast_dirty(Pool, Hash, Request);
        Result -> Result
    end.

%% @doc A request on a lease (see `lease/4'), run after the ones before it.
-spec lease_call(reference(), term(), pid(), term()) ->
          {ok, reference()} | {error, {atom(), binary()}}.
lease_call(Lease, Request, Pid, Tag) ->
    case lease_call_nif(Lease, Request, Pid, Tag) of
        reschedule -> lease_call_dirty(Lease, Request, Pid, Tag);
        Result -> Result
    end.

submit_nif(_Pool, _Hash, _Request, _Pid, _Tag, _Mode) -> ?NOT_LOADED.
submit_dirty(_Pool, _Hash, _Request, _Pid, _Tag, _Mode) -> ?NOT_LOADED.
more(_Slot) -> ?NOT_LOADED.
cast_nif(_Pool, _Hash, _Request) -> ?NOT_LOADED.
cast_dirty(_Pool, _Hash, _Request) -> ?NOT_LOADED.
lease_call_nif(_Lease, _Request, _Pid, _Tag) -> ?NOT_LOADED.
lease_call_dirty(_Lease, _Request, _Pid, _Tag) -> ?NOT_LOADED.
cancel(_Slot) -> ?NOT_LOADED.
stats(_Pool) -> ?NOT_LOADED.
stop(_Pool) -> ?NOT_LOADED.
parse_toml(_Text) -> ?NOT_LOADED.
check_toml(_Text) -> ?NOT_LOADED.
generic_executors(_N) -> ?NOT_LOADED.
generic_attach(_Executors, _Index, _Pid) -> ?NOT_LOADED.
generic_done_nif(_Done, _Result) -> ?NOT_LOADED.
generic_done_dirty(_Done, _Result) -> ?NOT_LOADED.
set_log_relay(_Pid) -> ?NOT_LOADED.
gd_transport_start(_Opts, _Workers, _Pid, _Tag) -> ?NOT_LOADED.
gd_transport_send(_Transport, _Host, _Affinity, _Key, _Bin) -> ?NOT_LOADED.
gd_transport_set_endpoints(_Transport, _Host, _Enabled, _Disabled) -> ?NOT_LOADED.
gd_transport_endpoints(_Transport, _Host) -> ?NOT_LOADED.
gd_transport_disabled_endpoints(_Transport, _Host) -> ?NOT_LOADED.
gd_transport_listening(_Transport) -> ?NOT_LOADED.
gd_transport_metrics(_Transport) -> ?NOT_LOADED.
gd_transport_stop(_Transport) -> ?NOT_LOADED.
gd_transport_ack(_Credit, _Count) -> ?NOT_LOADED.
gd_transport_set_worker(_Transport, _Index, _Pid) -> ?NOT_LOADED.
gd_transport_queue_times(_Transport, _Keep) -> ?NOT_LOADED.
%% The Prometheus endpoint (see mongoose_native_metrics).
pool_labels(_Pool, _HostType, _Tag) -> ?NOT_LOADED.
metrics_listen(_Addr, _Pid, _Tag) -> ?NOT_LOADED.
metrics_stop() -> ?NOT_LOADED.
metrics_section(_Name, _Text) -> ?NOT_LOADED.
gd_start(_Opts, _Hosts, _Node, _Pools, _Pid, _Tag) -> ?NOT_LOADED.
gd_stop() -> ?NOT_LOADED.
gd_call(_Op, _Args, _Pid, _Tag) -> ?NOT_LOADED.
gd_metrics() -> ?NOT_LOADED.
%% @doc Asks for one worker's connection for the caller alone; the answer is
%% `{Tag, {ok, Lease}}'. The lease goes back on `lease_release/2' or when
%% its last reference goes (then reset: an open transaction rolled back).
lease(_Pool, _Hash, _Pid, _Tag) -> ?NOT_LOADED.
lease_release(_Lease, _Reset) -> ?NOT_LOADED.
