drop table api_key;
drop table tenant;
