%% @doc Callbacks of the `redis' pool type. As in MongooseIM, Redis pools
%% refuse `available_worker'.
-module(mongoose_wpool_redis).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

init() -> ok.

start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(redis, HostType, Tag, WpoolOpts, ConnOpts).

stop(HostType, Tag) ->
    mongoose_wpool:stop(redis, HostType, Tag).

is_supported_strategy(available_worker) -> false;
is_supported_strategy(_) -> true.
