%% @doc Owns the log-limit table and the processes the library
%% needs in Erlang: the log relay, the metrics process and one executor
%% supervisor per generic pool.
-module(mongoose_native_sup).
-behaviour(supervisor).
-export([start_link/0, init/1, start_executors/3, stop_executors/1, start_child/1, stop_child/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    mongoose_wpool:forget_all(),
    mongoose_native_log:create_table(),
    Relay = #{id => mongoose_native_log_relay,
              start => {mongoose_native_log_relay, start_link, []}},
    Metrics = #{id => mongoose_native_metrics,
                start => {mongoose_native_metrics, start_link, []}},
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, [Relay, Metrics]}}.

-spec start_executors(term(), term(), pos_integer()) -> {ok, pid()} | {error, term()}.
start_executors(Name, Executors, N) ->
    Spec = #{id => {executors, Name},
             start => {mongoose_native_executor, start_sup, [Executors, N]},
             restart => temporary, type => supervisor},
    supervisor:start_child(?MODULE, Spec).

stop_executors(Name) ->
    stop_child({executors, Name}).

%% @doc A child of the library's own (temporary, stopped with stop_child/1).
start_child(Spec = #{id := _}) ->
    supervisor:start_child(?MODULE, Spec#{restart => temporary}).

stop_child(Id) ->
    _ = supervisor:terminate_child(?MODULE, Id),
    _ = supervisor:delete_child(?MODULE, Id),
    ok.
