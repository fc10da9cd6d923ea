%% @doc Passes the Rust side's log records to `logger'.
-module(mongoose_native_log_relay).
-export([start_link/0, init/1]).

start_link() ->
    proc_lib:start_link(?MODULE, init, [self()]).

init(Parent) ->
    register(?MODULE, self()),
    mongoose_native_nif:set_log_relay(self()),
    proc_lib:init_ack(Parent, {ok, self()}),
    loop().

loop() ->
    receive
        {mongoose_native_log, Level, Text} ->
            logger:log(Level, #{what => mongoose_native, text => Text}),
            loop();
        _ ->
            loop()
    end.
