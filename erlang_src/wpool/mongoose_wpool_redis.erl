%% @doc Callbacks of the `redis' pool type, kept for MongooseIM's sake: the
%% type's defaults and the strategies it refuses are in the NIF's table of
%% pool kinds (native/core/src/registry.rs).
-module(mongoose_wpool_redis).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

init() -> ok.

start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(redis, HostType, Tag, WpoolOpts, ConnOpts).

stop(HostType, Tag) ->
    mongoose_wpool:stop(redis, HostType, Tag).

is_supported_strategy(Strategy) ->
    mongoose_wpool:is_supported_strategy(redis, Strategy).
