%% @doc Callbacks of the `rdbms' pool type, kept for MongooseIM's sake: the
%% type's defaults and the strategies it refuses are in the NIF's table of
%% pool kinds (native/core/src/registry.rs).
-module(mongoose_wpool_rdbms).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

init() ->
    mongoose_rdbms:ensure_tables().

start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(rdbms, HostType, Tag, WpoolOpts, ConnOpts).

stop(HostType, Tag) ->
    mongoose_wpool:stop(rdbms, HostType, Tag).

is_supported_strategy(Strategy) ->
    mongoose_wpool:is_supported_strategy(rdbms, Strategy).
