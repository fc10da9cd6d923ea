%% @doc Callbacks of the `rdbms' pool type, kept for MongooseIM's sake: the
%% type's defaults and the strategies it refuses are in the NIF's table of
%% pool kinds (native/core/src/registry.rs).
-module(mongoose_wpool_rdbms).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).
-export([instrumentation/2, probe/2]).

init() ->
    mongoose_rdbms:ensure_tables().

start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(rdbms, HostType, Tag, WpoolOpts, ConnOpts).

stop(HostType, Tag) ->
    mongoose_wpool:stop(rdbms, HostType, Tag).

is_supported_strategy(Strategy) ->
    mongoose_wpool:is_supported_strategy(rdbms, Strategy).

%% @doc MongooseIM 6.3's events of an rdbms pool, probed by MongooseIM
%% every `instrumentation.probe_interval' (a global pool's under its own
%% name: an event keeps one set of label keys).
-spec instrumentation(mongoose_wpool:host_type(), mongoose_wpool:tag()) ->
          [mongoose_native_instrument:spec()].
instrumentation(global, Tag) ->
    [{wpool_global_rdbms_stats, #{pool_tag => Tag},
      #{probe => #{module => ?MODULE}, metrics => stats_metrics()}}];
instrumentation(HostType, Tag) ->
    [{wpool_rdbms_stats, #{host_type => HostType, pool_tag => Tag},
      #{probe => #{module => ?MODULE}, metrics => stats_metrics()}}].

%% @doc The pool's workers. MongooseIM adds its connections' socket
%% statistics (`inet:getstat/2' of each driver process's port); here the
%% sockets belong to the NIF's drivers, so those are not measured.
-spec probe(atom(), map()) -> #{workers => non_neg_integer()}.
probe(wpool_global_rdbms_stats, #{pool_tag := Tag}) ->
    workers(global, Tag);
probe(wpool_rdbms_stats, #{host_type := HostType, pool_tag := Tag}) ->
    workers(HostType, Tag).

workers(HostType, Tag) ->
    case mongoose_wpool:stats(rdbms, HostType, Tag) of
        Stats when is_list(Stats) -> #{workers => proplists:get_value(size, Stats)};
        {error, _} -> #{}
    end.

stats_metrics() ->
    #{workers => counter, recv_oct => spiral, recv_cnt => spiral, recv_max => gauge,
      send_oct => spiral, send_max => gauge, send_cnt => spiral, send_pend => spiral}.
