%% @doc Callbacks of the `rabbit' pool type, kept for MongooseIM's sake: the
%% type's defaults are in the NIF's table of pool kinds
%% (native/core/src/registry.rs), its options in the rabbit driver.
-module(mongoose_wpool_rabbit).
-export([init/0, start/4, stop/2, is_supported_strategy/1, instrumentation/2]).

-spec init() -> ok.
init() -> ok.

-spec start(mongoose_wpool:host_type(), mongoose_wpool:tag(), list() | map(), list() | map()) ->
          {ok, reference()} | {error, term()}.
start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(rabbit, HostType, Tag, WpoolOpts, ConnOpts).

-spec stop(mongoose_wpool:host_type(), mongoose_wpool:tag()) -> ok.
stop(HostType, Tag) ->
    mongoose_wpool:stop(rabbit, HostType, Tag).

%% @doc MongooseIM 6.3's events of a rabbit pool (its worker's). The
%% lanes count connections and publishes in the NIF; mongoose_native_metrics
%% executes what changed once a second.
-spec instrumentation(mongoose_wpool:host_type(), mongoose_wpool:tag()) ->
          [mongoose_native_instrument:spec()].
instrumentation(HostType, Tag) ->
    [{wpool_rabbit_connections, #{pool_tag => Tag, host_type => HostType},
      #{metrics => #{active => counter, opened => spiral, closed => spiral, failed => spiral}}},
     {wpool_rabbit_messages_published, #{pool_tag => Tag, host_type => HostType},
      #{metrics => #{count => spiral, failed => spiral, timeout => spiral, time => histogram,
                     size => histogram}}}].

-spec is_supported_strategy(atom()) -> boolean().
is_supported_strategy(Strategy) ->
    mongoose_wpool:is_supported_strategy(rabbit, Strategy).
