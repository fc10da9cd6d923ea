-module(mongoose_native_app).
-behaviour(application).
-export([start/2, stop/1]).

start(_Type, _Args) ->
    mongoose_native_sup:start_link().

stop(_State) ->
    mongoose_wpool:forget_all().
