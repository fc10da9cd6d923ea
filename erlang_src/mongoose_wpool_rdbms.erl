%% @doc Callbacks of the `rdbms' pool type (pgsql and mysql through the NIF).
%% Every strategy is allowed, as in MongooseIM.
-module(mongoose_wpool_rdbms).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

init() ->
    mongoose_rdbms:ensure_tables().

start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(rdbms, HostType, Tag, WpoolOpts, ConnOpts).

stop(HostType, Tag) ->
    mongoose_wpool:stop(rdbms, HostType, Tag).

is_supported_strategy(_Strategy) -> true.
